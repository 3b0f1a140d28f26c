"""Every page of the dashboard, rendered with AppTest against the shop's database (conftest,
shop.py): what each page shows — numbers, names, rows — for traffic whose outcome is known.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from eventscope.tracer.query.client import open_source
from tests.dashboard.dashboard_helpers import metrics, one, open_page, texts

pytestmark = pytest.mark.integration  # the real broker on 127.0.0.1:5672


def test_overview_shows_totals_orphans_and_slowest(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(shop_db, None, monkeypatch)
    assert metrics(at) == {
        "Events": "49",
        "Deliveries": "66",
        "Orphans": "7",
        "Producing services": "4",
        "Consuming services": "5",
        "Alerts firing": "0",
    }
    links = {link.proto.label.split(" — ")[0]: link.proto.query_string for link in at.get("page_link")}
    assert links == {"Unconsumed: 5": "reason=unconsumed", "Failed: 2": "reason=failed"}
    top = at.dataframe[0].value
    assert list(zip(top["event_type"], top["reason"], top["orphans"], strict=True)) == [
        ("invoice.requested", "unconsumed", 3),
        ("order.placed", "failed", 2),
        ("refund.requested", "unconsumed", 2),
    ]
    slowest = at.dataframe[1].value
    assert len(slowest) == 10 and (slowest["consistent_after_ms"] >= 0).all()
    assert set(slowest["event_type"]) <= {
        "order.placed",
        "payment.authorized",
        "stock.reserved",
        "shipment.created",
    }
    assert "Post-mortem on a database file" in texts(at)
    assert len(at.get("arrow_line_chart") or at.get("vega_lite_chart")) >= 1


def test_events_filters_and_pages(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(shop_db, "events", monkeypatch)
    assert "49 matching events" in texts(at)
    assert len(at.dataframe[0].value) == 49
    at.selectbox[0].select("order.placed")
    at.selectbox[4].select("nack")  # delivery outcome
    at.form_submit_button[0].click().run()
    assert "2 matching events" in texts(at)
    rows = at.dataframe[0].value
    assert list(rows["event_type"]) == ["order.placed", "order.placed"]
    assert all("nack" in outcomes for outcomes in rows["outcomes"])
    assert any(link.proto.label.startswith("Open the chain of order.placed") for link in at.get("page_link"))

    at.selectbox[0].select("(any)")
    at.selectbox[4].select("(any)")
    at.selectbox[1].select("shipping")  # producer or consumer
    at.form_submit_button[0].click().run()
    assert "20 matching events" in texts(at)  # 10 payments it consumed + 10 shipments it published

    at.text_input(key="since").input("2000-01-01T00:00:00")
    at.text_input(key="until").input("2000-01-02T00:00:00")
    at.form_submit_button[0].click().run()
    assert "0 matching events" in texts(at)
    at.text_input(key="until").input("yesterday")
    at.form_submit_button[0].click().run()
    assert any("'yesterday' is not an ISO 8601 time" in e.value for e in at.error)
    assert "20 matching events" in texts(at)  # since 2000, still the shipping service


def test_events_page_through_results(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = open_source(db=str(shop_db))
    try:
        first = source.ask("events_page", limit=20, offset=0)
        second = source.ask("events_page", limit=20, offset=20)
        third = source.ask("events_page", limit=20, offset=40)
    finally:
        source.close()
    assert first["total"] == 49 and [len(p["rows"]) for p in (first, second, third)] == [20, 20, 9]
    ids = [row["event_id"] for page in (first, second, third) for row in page["rows"]]
    assert len(set(ids)) == 49


def test_chain_of_an_order(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order = one(
        shop_db,
        "SELECT e.event_id FROM events e WHERE event_type = 'order.placed' "
        "AND NOT EXISTS (SELECT 1 FROM orphans_after(0) o WHERE o.event_id = e.event_id) "
        "ORDER BY published_at LIMIT 1",
    )
    at = open_page(shop_db, "chain", monkeypatch, event=order)
    assert at.text_input[0].value == order
    assert metrics(at)["Deliveries"] == "2" and metrics(at)["Orphan rows"] == "0"
    assert "Downstream: 4 events" in texts(at)
    dot = at.get("graphviz_chart")[0].proto.spec
    for name in ("order.placed", "payment.authorized", "stock.reserved", "shipment.created", "svc:shipping"):
        assert name in dot
    assert "ms in queue" in dot
    deliveries = at.dataframe[0].value
    assert sorted(deliveries["consumer_service"]) == [
        "inventory",
        "notifications",
        "orders",
        "orders",
        "payments",
        "shipping",
    ]
    assert set(deliveries["outcome"]) == {"ack"}
    assert (deliveries["wait_ms"] >= 0).all()
    downstream = [link.proto.label for link in at.get("page_link")]
    assert downstream[0] == "Open the whole conversation"
    assert sorted(downstream[1:]) == ["→ payment.authorized", "→ stock.reserved", "→→ shipment.created"]

    # from an effect, the page shows its cause upstream
    shipment = one(
        shop_db,
        f"SELECT event_id FROM chain('{order}') JOIN events USING (event_id) "
        "WHERE event_type = 'shipment.created'",
    )
    at = open_page(shop_db, "chain", monkeypatch, event=shipment)
    labels = [link.proto.label for link in at.get("page_link")]
    assert "↑ payment.authorized by payments" in labels and "↑↑ order.placed by orders" in labels


def test_payload_filter_and_the_captured_payload(
    shop_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "payloads.duckdb"  # the shop's file, with one order's body as capture keeps it
    shutil.copy(shop_db, db)
    order = one(
        db, "SELECT event_id FROM events WHERE event_type = 'order.placed' ORDER BY published_at LIMIT 1"
    )
    with duckdb.connect(str(db)) as connection:
        connection.execute(
            "INSERT INTO payloads VALUES (?, now(), 'application/json', 61, true, false, 1, ?)",
            [order, '{"order_id":4242,"password":"[redacted]"}'],
        )
    at = open_page(db, "events", monkeypatch)
    at.text_input(key="payload").input("order_id=4242")
    at.form_submit_button[0].click().run()
    assert "1 matching events" in texts(at)
    assert list(at.dataframe[0].value["event_id"]) == [order]
    at.text_input(key="payload").input("order_id")
    at.form_submit_button[0].click().run()
    assert any(e.value.startswith("Payload field: payload filter must be field=value") for e in at.error)
    assert "49 matching events" in texts(at)  # the bad filter is ignored, not an error page

    at = open_page(db, "chain", monkeypatch, event=order)
    (expander,) = [e for e in at.expander if e.label.startswith("Payload")]
    assert expander.label == "Payload (61 bytes published · application/json · 1 field(s) redacted)"
    assert at.json[0].value == '{"order_id":4242,"password":"[redacted]"}'


def test_chain_of_a_declined_order_shows_the_failure(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    declined = one(shop_db, "SELECT event_id FROM orphans_after(0) WHERE reason = 'failed' LIMIT 1")
    at = open_page(shop_db, "chain", monkeypatch, event=declined)
    assert any(e.value.startswith("Orphan: failed at eventscope-dash-") for e in at.error)
    assert "Downstream: 2 events" in texts(at)  # the order and its stock reservation; no payment
    deliveries = at.dataframe[0].value
    assert sorted(deliveries["outcome"]) == ["ack", "ack", "nack"]
    assert "nack" in at.get("graphviz_chart")[0].proto.spec


def test_chain_of_an_unknown_event(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(shop_db, "chain", monkeypatch, event="no-such-event")
    assert [w.value for w in at.warning] == ["No event 'no-such-event' is stored."]


def test_orphans_explain_each_reason(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(shop_db, "orphans", monkeypatch)
    assert metrics(at) == {"Failed": "2", "Unconsumed": "5"}
    shown = texts(at)
    assert "**Failed** · 2 of order.placed" in shown
    assert (
        "Likely cause: the consumer of queue eventscope-dash-" in shown
        and ".payments failed or rejected" in shown
    )
    assert "**Unconsumed** · 2 of refund.requested" in shown
    assert "with routing key refund.requested: either no queue is bound" in shown
    assert "Fix: " in shown
    table = at.dataframe[0].value
    assert len(table) == 7 and sorted(table["reason"].unique()) == ["failed", "unconsumed"]
    assert any(link.proto.label.startswith("Open its chain: ") for link in at.get("page_link"))

    fanout = at.dataframe[1].value
    payments = fanout[fanout["queue"].str.endswith(".payments")].iloc[0]
    assert (payments["event_type"], payments["events"], payments["delivered"], payments["acked"]) == (
        "order.placed",
        12,
        12,
        10,
    )
    assert payments["failed"] == 2 and payments["missing"] == 0

    at = open_page(shop_db, "orphans", monkeypatch, reason="failed")
    assert at.selectbox[0].value == "failed"
    assert len(at.dataframe[0].value) == 2


def test_topology_shows_traffic_groups_and_the_orchestrator(
    shop_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(shop_db, "topology", monkeypatch)
    producers, routes, groups, collaboration = (frame.value for frame in at.dataframe)
    assert dict(zip(producers["producer"], producers["events"], strict=True)) == {
        "orders": 17,
        "inventory": 12,
        "payments": 10,
        "shipping": 10,
    }
    by_consumer = dict(zip(routes["consumer"], routes["deliveries"], strict=True))
    assert by_consumer == {"orders": 22, "inventory": 12, "payments": 12, "shipping": 10, "notifications": 10}
    assert int(routes[routes["consumer"] == "payments"]["errors"].iloc[0]) == 2
    assert set(groups["share_pct"]) == {100.0} and set(groups["members"]) == {1}
    roles = dict(zip(collaboration["service"], collaboration["role"], strict=True))
    assert roles["orders"] == "orchestrator" and roles["shipping"] == "choreography"
    assert "**orders** orchestrates: sends to 2 services, 2 of which reply." in texts(at)
    dot = at.get("graphviz_chart")[0].proto.spec
    assert "2 not acked" in dot and '"p:orders"' in dot


def test_lag_per_queue_and_consistency(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(shop_db, "lag", monkeypatch)
    queues, consistency = at.dataframe[0].value, at.dataframe[1].value
    assert sorted(queues["consumer_service"]) == [
        "inventory",
        "notifications",
        "orders",
        "payments",
        "shipping",
    ]
    assert (queues["wait_p50_ms"] >= 0).all() and (queues["processing_p95_ms"] >= 0).all()
    counts = dict(zip(consistency["event_type"], consistency["events"], strict=True))
    assert counts == {
        "order.placed": 12,
        "payment.authorized": 10,
        "stock.reserved": 12,
        "shipment.created": 10,
    }
    assert (consistency["p50_ms"] <= consistency["p99_ms"]).all()


def test_workflows_stuck_and_complete(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(shop_db, "workflows", monkeypatch)
    at.number_input(key="stuck_after_s").set_value(0).run()
    assert metrics(at) == {"Flows": "17", "Stuck": "7", "Shown": "17"}
    flows = at.dataframe[0].value
    assert dict(flows["status"].value_counts()) == {"complete": 10, "stuck": 7}
    stuck = flows[flows["status"] == "stuck"]
    assert set(stuck["first_event_type"]) == {"order.placed", "invoice.requested", "refund.requested"}
    declined = stuck[stuck["first_event_type"] == "order.placed"]
    assert len(declined) == 2 and all(
        s.startswith("order.placed @ ") and s.endswith("(failed)") for s in declined["stuck_at"]
    )
    complete = flows[flows["status"] == "complete"]
    assert set(complete["events"]) == {4}  # order, payment, stock, shipment

    at.selectbox(key="status").select("complete").run()
    assert metrics(at)["Shown"] == "10"


def test_sql_runs_queries_downloads_and_shows_errors(shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(shop_db, "sql", monkeypatch)
    assert "events" in [e.label for e in at.expander] and "orphans" in [e.label for e in at.expander]
    at.text_area(key="query").input(
        "SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC, 1"
    )
    at.button[0].click().run()
    result = at.dataframe[-1].value
    assert list(result.itertuples(index=False, name=None))[:2] == [
        ("order.placed", 12),
        ("stock.reserved", 12),
    ]
    assert "6 rows" in texts(at)
    assert [b.proto.label for b in at.get("download_button")] == ["Download CSV", "Download Parquet"]

    at.selectbox(key="example").select("Busiest event types").run()
    assert at.text_area(key="query").value.startswith("SELECT event_type, count(*) AS events FROM events")
    busiest = at.dataframe[-1].value
    assert dict(zip(busiest["event_type"], busiest["events"], strict=True))["invoice.requested"] == 3

    at.text_area(key="query").input("SELECT nope FROM events").run()
    assert any("The query failed" in e.value and "nope" in e.value for e in at.error)
    at.text_area(key="query").input("DELETE FROM events").run()
    assert any("only SELECT queries are allowed" in e.value for e in at.error)


def test_alerts_firing_and_resolved(alerts_db: Path, shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(alerts_db, "alerts", monkeypatch)
    assert metrics(at) == {"Firing": "1", "Resolved": "1"}
    table = at.dataframe[0].value
    assert list(table["state"]) == ["firing", "resolved"]
    assert list(table["event_type"]) == ["order.placed", "invoice.requested"]
    if "severity" in table.columns:  # schema version 3
        assert list(table["severity"]) == ["critical", "warning"]
        assert table["detail"].iloc[0] == "payments never acknowledged it"
    labels = [link.proto.label for link in at.get("page_link")]
    assert labels[0].startswith("firing: [critical] orphan-failed · failed · order.placed") or labels[
        0
    ].startswith("firing: orphan-failed · failed · order.placed")
    at.selectbox(key="alert_state").select("resolved").run()
    assert list(at.dataframe[0].value["alert_id"]) == ["alert-2"]

    at = open_page(shop_db, "alerts", monkeypatch)
    assert [s.value for s in at.success] == ["No alerts."]


@pytest.mark.parametrize("page", [None, "events", "orphans", "topology", "lag", "workflows"])
def test_empty_database_shows_how_to_send_events(
    empty_db: Path, monkeypatch: pytest.MonkeyPatch, page: str | None
) -> None:
    at = open_page(empty_db, page, monkeypatch)
    code = [c.value for c in at.code]
    assert "eventscope demo" in code
    assert any("instrument_channel(connection.channel())" in c for c in code)


def test_alerts_page_lists_incidents_first_sortable_and_expandable(
    alerts_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "incidents.duckdb"  # two incidents: a small old one and a big new one
    shutil.copy(alerts_db, db)
    with duckdb.connect(str(db)) as connection:
        connection.execute(
            """
            INSERT INTO incidents VALUES
              ('inc-old', 'orphan-failed', 'critical', 'open', 'failed', 'order.placed', 'x.payments',
               '{}', 1, 1, ['e1'], now() - INTERVAL 2 HOUR, now() - INTERVAL 2 HOUR, now(), 1, NULL, true),
              ('inc-big', 'orphan-unconsumed', 'warning', 'open', 'unconsumed', 'invoice.requested',
               'x.billing', '{}', 40, 40, ['e2'], now() - INTERVAL 5 MINUTE, now(), now(), 2, NULL, true)
            """
        )
        connection.execute("UPDATE alert_details SET incident_id = 'inc-old' WHERE alert_id = 'alert-1'")
    at = open_page(db, "alerts", monkeypatch)
    titles = [e.proto.label for e in at.expander]
    assert titles[0].startswith("🔴 open: [warning] orphan-unconsumed · unconsumed · invoice.requested")
    assert "40 events" in titles[0] and "1 events" in titles[1]
    assert metrics(at)["Open incidents"] == "2"
    at.selectbox(key="incident_sort").select("oldest first").run()
    titles = [e.proto.label for e in at.expander]
    assert titles[0].startswith("🔴 open: [critical] orphan-failed · failed · order.placed · x.payments")
    members = at.dataframe[0].value  # the old incident's events, in its expander (now the first)
    assert list(members["alert_id"]) == ["alert-1"] and list(members["reason"]) == ["failed"]
    assert metrics(at)["Firing"] == "1"  # every alert still listed after the incidents


def test_overview_shades_the_buckets_still_inside_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from eventscope.tracer.ingest.normaliser import normalise
    from eventscope.tracer.ingest.writer import Writer
    from eventscope.tracer.store.duckdb_store import Store
    from tests import spans

    monkeypatch.setattr(spans, "_T0", int((time.time() - 90) * 1e9))  # events of the last 90 s
    db = tmp_path / "recent.duckdb"
    store = Store.open(db, grace_s=60)
    writer = Writer(store).start()
    try:
        events = [
            spans.publish(trace_id=spans.new_trace(), event_id=spans.new_span_id(), start_ms=i * 1000)
            for i in range(90)
        ]
        writer.submit(normalise(spans.request(*events))).result(10)
    finally:
        writer.close()
        store.close()
    at = open_page(db, None, monkeypatch)
    assert "An event is judged once it is 60 s old (the grace): the shaded 'pending' band (after" in texts(at)
    assert 0 < int(metrics(at)["Orphans"]) < 90  # the newest events have no verdict yet
