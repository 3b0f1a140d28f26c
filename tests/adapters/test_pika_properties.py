"""The properties eventscope sends with pika encode to exactly the bytes pika's own encoding writes."""

from __future__ import annotations

import itertools

import pytest
from pika import exceptions
from pika.spec import BasicProperties

from eventscope.adapters.pika import _copy_properties, _OutgoingProperties

_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_SHAPES = [
    {},
    {"headers": {}},
    {"headers": {"traceparent": _TRACEPARENT}, "message_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"},
    {
        "headers": {"traceparent": _TRACEPARENT, "x-causation-id": "a", "x-correlation-id": "b"},
        "message_id": "m",
        "timestamp": 1_700_000_000,
        "app_id": "orders",
        "type": "order.placed",
        "correlation_id": "conv-1",
    },
    {"headers": {"é☃": "ü" * 200, "k": ""}, "app_id": "ß"},  # multi-byte keys and values, long values
    {"headers": {"x": "y" * 70_000}},  # a long string longer than 65 535 bytes
    {"timestamp": 0},
    {"timestamp": 2**64 - 1},
    {"message_id": "x" * 255},
    # shapes the one-step encoding leaves to pika: other fields, other value types
    {"content_type": "application/json", "delivery_mode": 2, "headers": {"traceparent": _TRACEPARENT}},
    {"priority": 5, "message_id": "m"},
    {"headers": {"n": 1, "f": True, "nested": {"a": [1, "b"]}, "raw": b"\x00"}},
    {"headers": {"traceparent": b"bytes value"}},
    {"message_id": b"bytes id"},
    {"reply_to": "q", "expiration": "1000", "user_id": "guest", "cluster_id": "c"},
]


def _pika_bytes(properties: BasicProperties) -> bytes:
    plain = BasicProperties()
    plain.__dict__.update(properties.__dict__)
    return b"".join(plain.encode())


@pytest.mark.parametrize("fields", _SHAPES, ids=lambda fields: ",".join(fields) or "empty")
def test_the_copy_encodes_like_pika(fields):
    copy = _copy_properties(BasicProperties(**fields))
    assert type(copy) is _OutgoingProperties
    assert isinstance(copy, BasicProperties)
    assert b"".join(copy.encode()) == _pika_bytes(copy)


def test_every_combination_of_the_common_fields_encodes_like_pika():
    values = {
        "headers": {"traceparent": _TRACEPARENT},
        "correlation_id": "c",
        "message_id": "m",
        "timestamp": 42,
        "type": "t",
        "app_id": "a",
    }
    for size in range(len(values) + 1):
        for names in itertools.combinations(values, size):
            copy = _copy_properties(BasicProperties(**{name: values[name] for name in names}))
            assert b"".join(copy.encode()) == _pika_bytes(copy), names


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"message_id": "x" * 256}, exceptions.ShortStringTooLong),
        ({"headers": {"k" * 256: "v"}}, exceptions.ShortStringTooLong),
        ({"timestamp": -1}, Exception),
        ({"timestamp": "soon"}, Exception),
    ],
)
def test_values_pika_refuses_raise_pikas_own_error(fields, error):
    copy = _copy_properties(BasicProperties(**fields))
    with pytest.raises(error) as ours:
        copy.encode()
    with pytest.raises(error) as theirs:
        _pika_bytes(copy)
    assert type(ours.value) is type(theirs.value)


def test_the_callers_properties_are_neither_changed_nor_retyped():
    original = BasicProperties(headers={"traceparent": _TRACEPARENT}, message_id="m")
    before = dict(original.__dict__)
    copy = _copy_properties(original)
    copy.headers = {"other": "x"}
    copy.encode()
    assert type(original) is BasicProperties
    assert original.__dict__ == before


def test_a_copy_of_no_properties_is_a_fresh_basic_properties_shared_with_nothing():
    blank = BasicProperties()
    first, second = _copy_properties(None), _copy_properties(None)
    assert isinstance(first, BasicProperties) and first.__dict__ == blank.__dict__
    assert b"".join(first.encode()) == b"".join(blank.encode())
    first.headers = {"traceparent": _TRACEPARENT}
    first.message_id = "m"
    assert second.headers is None and second.message_id is None
    assert _copy_properties(None).__dict__ == BasicProperties().__dict__  # the template is unchanged
