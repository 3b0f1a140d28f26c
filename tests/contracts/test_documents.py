"""AsyncAPI in: what is read from 3.0 and 2.6 documents, and precise errors for bad ones; the
collector does not start half-configured.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from eventscope.tracer.alerts import rules
from eventscope.tracer.contracts import asyncapi
from eventscope.tracer.contracts.asyncapi import ContractError
from eventscope.tracer.contracts.matching import Catalog, topic_matches
from tests.processes import CLI, free_port

SHOP = Path(__file__).with_name("shop")

V3 = """\
asyncapi: 3.0.0
info:
  title: orders
  version: 1.0.0
channels:
  placed:
    address: order.placed
    bindings:
      amqp:
        is: routingKey
        exchange:
          name: shop
    messages:
      placed:
        name: order.placed
        payload:
          type: object
operations:
  announce:
    action: send
    channel:
      $ref: '#/channels/placed'
"""


def errors(text: str, file: str = "orders.yaml") -> list[str]:
    with pytest.raises(ContractError) as caught:
        asyncapi.parse(text, file=file)
    return [str(issue) for issue in caught.value.issues]


def test_the_shop_documents_declare_who_sends_and_receives_what() -> None:
    catalog = Catalog(asyncapi.load(path) for path in sorted(SHOP.glob("*.yaml")))
    assert sorted(catalog.services) == ["orders", "payments", "shipping"]  # 2.6: x-eventscope-service
    placed = catalog.match(event_type="order.placed", exchange="contracts-shop", routing_key="order.placed")
    assert (placed.senders, placed.receivers) == (["orders"], ["payments"])
    paid = catalog.match(
        event_type="payment.authorized", exchange="contracts-shop", routing_key="payment.authorized"
    )
    assert (paid.senders, paid.receivers) == (["payments"], ["shipping"])  # 2.6: publish = receives
    # another application's order.placed on another exchange is not judged by these contracts
    other = catalog.match(event_type="order.placed", exchange="elsewhere", routing_key="order.placed")
    assert other.declarations == () and not other.in_scope
    (orders,) = [d for d in placed.declarations if d.service == "orders"]
    assert orders.schema is not None and orders.schema["properties"]["items"]["items"]["required"] == ["sku"]
    assert orders.line == 19  # the operation's line


def test_without_bindings_messages_match_by_event_type() -> None:
    text = V3.replace(
        "    bindings:\n      amqp:\n        is: routingKey\n        exchange:\n          name: shop\n", ""
    )
    catalog = Catalog([asyncapi.parse(text)])
    assert catalog.match(event_type="order.placed", exchange="any", routing_key="x").senders == ["orders"]
    unknown = catalog.match(event_type="order.cancelled", exchange="any", routing_key="x")
    assert unknown.in_scope and unknown.declarations == ()  # no bindings anywhere: everything is in scope


def test_without_documents_nothing_is_judged() -> None:
    assert (
        not Catalog([]).match(event_type="order.placed", exchange="shop", routing_key="order.placed").in_scope
    )


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("order.placed", "order.placed", True),
        ("order.*", "order.placed", True),
        ("order.*", "order.placed.eu", False),
        ("order.#", "order.placed.eu", True),
        ("order.#", "order", True),
        ("#", "anything.at.all", True),
        ("order.{region}.placed", "order.eu.placed", True),
        ("order.placed", "order.cancelled", False),
    ],
)
def test_topic_matching(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_schema_errors_have_the_line_of_the_offending_key() -> None:
    text = V3.replace("    action: send", "    action: sned").replace("type: object", "type: objekt")
    assert errors(text) == [
        "orders.yaml:17: channels.placed.messages.placed.payload.type: 'objekt' is not one of "
        "['array', 'boolean', 'integer', 'null', 'number', 'object', 'string'] (AsyncAPI 3.0.0 schema)",
        "orders.yaml:20: operations.announce.action: 'sned' is not one of ['send', 'receive'] "
        "(AsyncAPI 3.0.0 schema)",
    ]


def test_references_that_point_at_nothing_and_unsupported_things() -> None:
    assert errors(V3.replace("#/channels/placed'", "#/channels/nope'")) == [
        "orders.yaml:22: operations.announce.channel.$ref: '#/channels/nope' points at nothing"
    ]
    assert errors(V3.replace("asyncapi: 3.0.0", "asyncapi: 2.5.0")) == [
        "orders.yaml:1: asyncapi: AsyncAPI version '2.5.0' is not supported (hint: asyncapi: 3.0.0 or 2.6.0)"
    ]
    assert errors("asyncapi: 3.0.0\ninfo: [\n")[0].startswith("orders.yaml:3: not valid YAML/JSON")
    external = V3.replace(
        "        payload:\n          type: object", "        payload:\n          $ref: 'other.yaml#/X'"
    )
    assert errors(external) == [
        "orders.yaml:17: channels.placed.messages.placed.payload.$ref: only local references are supported, "
        "not 'other.yaml#/X' (hint: #/...)"
    ]


def test_two_documents_for_one_service_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(V3)
    (tmp_path / "b.yaml").write_text(V3)
    (tmp_path / "eventscope.toml").write_text('[contracts]\nasyncapi = ["*.yaml"]\n')
    with pytest.raises(rules.ConfigError, match="service 'orders' is already described by"):
        rules.load(tmp_path / "eventscope.toml")


def test_config_errors_point_into_the_toml_and_into_the_documents(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "orders.yaml").write_text(V3.replace("    action: send", "    action: sned"))
    (tmp_path / "eventscope.toml").write_text(
        '[contracts]\nasyncapi = ["specs/*.yaml", "missing.yaml"]\nsample_rate = 2\nsilent_factr = 3\n'
    )
    with pytest.raises(rules.ConfigError) as caught:
        rules.load(tmp_path / "eventscope.toml")
    messages = [str(issue) for issue in caught.value.issues]
    toml = str(tmp_path / "eventscope.toml")
    assert (
        f"{toml}:3: contracts.sample_rate: is a fraction of the payloads, 0 to 1, not 2 "
        "(hint: 0.1 = one in ten)" in messages
    )
    assert any(m.startswith(f"{toml}:4: contracts.silent_factr: unknown key") for m in messages)
    assert any(
        m.startswith(f"{tmp_path / 'specs' / 'orders.yaml'}:20: operations.announce.action") for m in messages
    )
    assert any(m.startswith(f"{tmp_path / 'missing.yaml'}: cannot read the file") for m in messages)


def test_the_collector_does_not_start_half_configured(tmp_path: Path) -> None:
    (tmp_path / "orders.yaml").write_text(V3.replace("    action: send", "    action: sned"))
    (tmp_path / "eventscope.toml").write_text('[contracts]\nasyncapi = ["orders.yaml"]\n')
    db = tmp_path / "c.duckdb"
    done = subprocess.run(
        [
            *CLI,
            "collect",
            "--db",
            str(db),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--config",
            str(tmp_path / "eventscope.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "is not valid; nothing started" in done.stderr
    assert f"{tmp_path / 'orders.yaml'}:20: operations.announce.action" in done.stderr
    assert not db.exists()


def test_contracts_check_cli(tmp_path: Path) -> None:
    good = subprocess.run(
        [*CLI, "contracts", "check", *map(str, sorted(SHOP.glob("*.yaml")))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert "service 'shipping' (AsyncAPI 2.6.0): sends nothing; receives payment.authorized" in good.stdout
    (tmp_path / "bad.yaml").write_text(V3.replace("#/channels/placed'", "#/channels/nope'"))
    bad = subprocess.run(
        [*CLI, "contracts", "check", str(tmp_path / "bad.yaml")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1
    assert (
        f"{tmp_path / 'bad.yaml'}:22: operations.announce.channel.$ref: '#/channels/nope' points at nothing"
        in bad.stderr
    )
