"""The parts of redrive that need no broker: edits, requests, headers, records, the migration."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventscope.tracer.redrive.mover import REDRIVE_HEADER, Edit, EditError, redrive_count
from eventscope.tracer.redrive.records import RedriveRecord, new_id, text_of
from eventscope.tracer.redrive.service import RedriveRequest
from eventscope.tracer.store.duckdb_store import Store


def test_an_edit_must_be_json_and_within_the_cap() -> None:
    assert Edit.parse() is None
    assert Edit.parse(body='{"a": 1}') == Edit(body=b'{"a": 1}')
    with pytest.raises(EditError, match="not valid JSON"):
        Edit.parse(body="{a: 1}")
    with pytest.raises(EditError, match="above the cap"):
        Edit.parse(body='"' + "x" * 20 + '"', max_bytes=10)
    with pytest.raises(EditError, match="JSON object"):
        Edit.parse(headers=["x"])
    with pytest.raises(EditError, match="set by the redrive"):
        Edit.parse(headers={REDRIVE_HEADER: 0})
    with pytest.raises(EditError, match="only strings"):
        Edit.parse(headers={"nested": {"a": 1}})
    assert Edit.parse(headers={"tenant": "7", "gone": None}).headers == {"tenant": "7", "gone": None}


@pytest.mark.parametrize(
    ("headers", "count"),
    [(None, 0), ({}, 0), ({REDRIVE_HEADER: 2}, 2), ({REDRIVE_HEADER: b"3"}, 3), ({REDRIVE_HEADER: "x"}, 0)],
)
def test_redrive_count_reads_any_header_shape(headers: object, count: int) -> None:
    assert redrive_count(headers) == count


def test_a_request_says_what_and_who() -> None:
    request = RedriveRequest.from_json(
        {"event_ids": ["a", "a", "b"], "to_queue": "q", "actor": "alice", "dry_run": True},
        caller="api@1.2.3.4",
    )
    assert (request.event_ids, request.to_queue, request.dry_run) == (("a", "b"), "q", True)
    assert request.actor == "alice via api@1.2.3.4"  # the name given never replaces the address
    assert RedriveRequest.from_json({"queue": "dlq"}, caller="api@x").actor == "api@x"
    for bad, message in [
        ([], "JSON object"),
        ({}, "say what to redrive"),
        ({"queue": "dlq", "whatever": 1}, "unknown fields"),
        ({"event_ids": "a"}, "list of event ids"),
        ({"group": {"colour": "red"}}, "group filters"),
        ({"queue": "dlq", "limit": 0}, "positive integer"),
        ({"queue": ""}, "queue name"),
        ({"queue": "dlq", "dry_run": "false"}, "true or false"),
    ]:
        with pytest.raises(ValueError, match=message):
            RedriveRequest.from_json(bad, caller="api@x")


def test_records_keep_the_original_only_when_edited() -> None:
    record = RedriveRecord(
        redrive_id=new_id(),
        request_id=new_id(),
        event_id="e",
        actor="a",
        mode="dead_letter",
        outcome="sent",
        edited=True,
        original_body=b"\xff\x00",
        original_headers={"k": b"v"},
    )
    row = record.row()
    assert row["original_body"] == "base64:/wA=" and row["original_headers"] == '{"k": "v"}'
    record.edited = False
    assert record.row()["original_body"] is None
    assert text_of("é".encode()) == "é"
    ids = [new_id() for _ in range(100)]
    assert len(set(ids)) == 100 and all(i[14] == "7" for i in ids)  # UUIDv7 layout


def test_the_redrives_migration_applies_whatever_came_before(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    store = Store.open(path)
    reader = store.reader()
    assert (10,) in reader.execute("SELECT version FROM schema_version").fetchall()
    reader.execute("DROP TABLE redrives")  # a file from before v10 (or with v10 missing)
    reader.execute("DELETE FROM schema_version WHERE version = 10")
    reader.close()
    store.close()
    store = Store.open(path)
    reader = store.reader()
    assert reader.execute("SELECT count(*) FROM redrives").fetchall() == [(0,)]
    reader.close()
    store.close()
