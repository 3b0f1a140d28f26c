"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

``eventscope dashboard --db`` on a free loopback port; overview → an orphan → its chain,
asserting on visible text, no uncaught exception on any page, screenshots in tests/artifacts/.
Never a downloaded browser: chromium comes from the system (``.ci/run`` installs it). In CI
(``CI=true``) a missing chromium fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventscope.dashboard import server
from tests.dashboard.dashboard_helpers import CLI, ROOT, free_port, one

pytestmark = pytest.mark.integration  # the real broker on 127.0.0.1:5672

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def dashboard_url(shop_db: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "dashboard", "--db", str(shop_db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.wait_ready(port, process, timeout=60), process.communicate(timeout=10)[0]
        yield server.url(port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _no_exception(page) -> None:  # type: ignore[no-untyped-def]
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")[:2000]


def _svg_texts(page, selector: str = '[data-testid="stVegaLiteChart"] svg text') -> list[str]:  # type: ignore[no-untyped-def]
    """The text Vega drew (it renders SVG): axis titles, tick labels, legends, marks."""
    return [t.strip() for t in page.locator(selector).all_text_contents() if t.strip()]


def _not_clipped(locator) -> None:  # type: ignore[no-untyped-def]
    """The element shows its whole text: nothing cut with an ellipsis or hidden by overflow."""
    expect_all = locator.evaluate("e => [e.scrollWidth, e.clientWidth, e.innerText]")
    scroll, client, text = expect_all
    assert scroll <= client + 1 and "…" not in text, expect_all


def test_overview_to_an_orphan_to_its_chain(dashboard_url: str, shop_db: Path, tmp_path: Path) -> None:
    executable = _chromium()
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=30_000)  # a shared, busy machine: the first page may take a while
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(dashboard_url)
            main = page.locator('[data-testid="stMain"]')
            expect(main.get_by_role("heading", name="Overview")).to_be_visible()
            expect(page.get_by_test_id("stMetric").filter(has_text="Events")).to_contain_text("49")
            expect(page.get_by_test_id("stMetric").filter(has_text="Orphans")).to_contain_text("7")
            expect(main).to_contain_text("Most orphaned event types and queues")
            page.wait_for_timeout(1500)  # charts settle
            _no_exception(page)
            # one time convention, stated on every page (the sidebar) and kept by the charts
            expect(page.get_by_test_id("stSidebar")).to_contain_text("All times are UTC, 24-hour clock.")
            expect(main).to_contain_text("UTC")
            texts = _svg_texts(page)
            assert "time (UTC)" in texts and "orphans" in texts and "per second" in texts, texts
            ticks = [t for t in texts if re.fullmatch(r"\d{2}:\d{2}:\d{2}", t)]
            assert ticks, texts  # 24-hour clock with seconds, never "10:05" in a 12-hour clock
            assert not any(re.search(r"\b(AM|PM)\b", t) for t in texts), texts
            assert {"unconsumed", "failed"} <= set(texts), texts  # the reason legend, uncut
            expect(main).to_contain_text("An event is judged once it is 0 s old (the grace)")
            page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

            main.get_by_role("link", name="Failed: 2", exact=False).click()
            # exact: the Overview page, still shown until the click lands, has "Orphans by reason" headings
            expect(main.get_by_role("heading", name="Orphans", exact=True)).to_be_visible()
            expect(main).to_contain_text("Likely cause: the consumer of queue")
            expect(main).to_contain_text("failed or rejected them")
            cells = page.locator('[role="gridcell"]').filter(has_text="failed")
            expect(cells.first).to_be_attached()
            assert "reason=failed" in page.url
            _no_exception(page)
            page.screenshot(path=str(ARTIFACTS / "dashboard-orphans.png"), full_page=True)

            main.get_by_role("link", name="Open its chain: failed · order.placed", exact=False).click()
            expect(main.get_by_role("heading", name="Event / chain")).to_be_visible()
            expect(main).to_contain_text("order.placed · published by orders")
            expect(main).to_contain_text("Orphan: failed at")
            expect(main).to_contain_text("Downstream: 2 events")
            exchange = one(shop_db, "SELECT exchange FROM events LIMIT 1")
            facts = main.get_by_test_id("stMarkdownContainer").filter(has_text=exchange).first
            expect(facts).to_be_visible()
            _not_clipped(facts)
            routing = main.get_by_test_id("stMarkdownContainer").filter(has_text="Routing key").first
            expect(routing).to_contain_text("order.placed")
            _not_clipped(routing)
            expect(main).to_contain_text("Conversation: who talked to whom, in order")
            expect(main).to_contain_text("messages, in publish order (top to bottom)")
            expect(main).to_contain_text("Waterfall")
            expect(page.locator("svg").filter(has_text="stock.reserved").first).to_be_visible()
            assert "event=" in page.url
            page.wait_for_timeout(1000)
            _no_exception(page)
            page.screenshot(path=str(ARTIFACTS / "dashboard-chain.png"), full_page=True)
            diagram = main.get_by_test_id("stVegaLiteChart").first  # the first chart: the conversation
            diagram.scroll_into_view_if_needed()
            texts = _svg_texts(page)
            for lifeline in ("orders", "payments", "inventory"):
                assert lifeline in texts, texts
            assert any(t.startswith("1. order.placed via ") for t in texts), texts
            assert any("✗ nack" in t or "✗ failed" in t for t in texts), texts
            diagram.screenshot(path=str(ARTIFACTS / "dashboard-sequence.png"))

            page.goto(f"{dashboard_url}/lag")
            expect(main.get_by_role("heading", name="Lag")).to_be_visible()
            expect(main).to_contain_text("One bar pair per queue and consumer service")
            page.wait_for_timeout(1500)
            texts = _svg_texts(page)
            assert "p95 (ms)" in texts and "queue · consumer" in texts, texts
            assert not any("streamlit-generated" in t for t in texts), texts
            prefix = exchange.removesuffix(".shop")
            assert f"{prefix}.payments · payments" in texts, texts  # whole queue names, each consumer
            assert {"time in queue", "processing"} <= set(texts), texts
            _no_exception(page)
            page.screenshot(path=str(ARTIFACTS / "dashboard-lag.png"), full_page=True)
        finally:
            browser.close()
