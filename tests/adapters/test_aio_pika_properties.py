"""The properties eventscope sends with aio-pika marshal to exactly the bytes pamqp's own marshal writes."""

from __future__ import annotations

import datetime as dt
import itertools

import aiormq
import pytest
from aio_pika import DeliveryMode, Message

from eventscope.adapters._amqp import Unusual
from eventscope.adapters.aio_pika import _copy_message, _Properties

_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_STAMP = dt.datetime(2026, 12, 8, 1, 2, 3, tzinfo=dt.timezone.utc)
_SHAPES = [
    {},
    {"headers": {}},
    {"headers": {"traceparent": _TRACEPARENT}, "message_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"},
    {
        # keys out of order: pamqp writes a table sorted by key
        "headers": {"x-correlation-id": "b", "traceparent": _TRACEPARENT, "x-causation-id": "a"},
        "message_id": "m",
        "timestamp": _STAMP,
        "app_id": "orders",
        "type": "order.placed",
        "correlation_id": "conv-1",
    },
    {"headers": {"é☃": "ü" * 200, "k": ""}, "app_id": "ß", "correlation_id": ""},
    {"headers": {"x": "y" * 70_000}},
    {
        "message_id": "x" * 255,
        "timestamp": dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    },
    # shapes the one-step marshal leaves to pamqp
    {"timestamp": dt.datetime(2026, 1, 1, 12)},  # naive: pamqp takes it as UTC
    {"delivery_mode": DeliveryMode.PERSISTENT, "priority": 9, "headers": {"traceparent": _TRACEPARENT}},
    {"content_type": "application/json", "delivery_mode": 2, "headers": {"traceparent": _TRACEPARENT}},
    {"priority": 5, "expiration": 10, "message_id": "m"},
    {"headers": {"n": 1, "f": True, "nested": {"a": [1, "b"]}}},
    {"headers": {"k" * 129: "v"}},  # pamqp truncates the key
    {"reply_to": "q", "user_id": "guest"},
]


def _pamqp_bytes(properties: aiormq.spec.Basic.Properties) -> bytes:
    plain = aiormq.spec.Basic.Properties()
    for name in plain.__slots__:
        setattr(plain, name, getattr(properties, name))
    return plain.marshal()


@pytest.mark.parametrize("fields", _SHAPES, ids=lambda fields: ",".join(fields) or "empty")
def test_the_copy_marshals_like_pamqp(fields):
    original = Message(b"body", **fields)
    properties = _copy_message(original).properties
    assert type(properties) is _Properties
    assert isinstance(properties, aiormq.spec.Basic.Properties)
    assert properties.marshal() == _pamqp_bytes(properties)
    assert type(original.properties) is aiormq.spec.Basic.Properties  # the caller's message builds its own


def test_every_combination_of_the_common_fields_marshals_like_pamqp():
    values = {
        "headers": {"traceparent": _TRACEPARENT},
        "correlation_id": "c",
        "message_id": "m",
        "timestamp": _STAMP,
        "type": "t",
        "app_id": "a",
    }
    for size in range(len(values) + 1):
        for names in itertools.combinations(values, size):
            message = _copy_message(Message(b"", **{name: values[name] for name in names}))
            properties = message.properties
            assert properties.marshal() == _pamqp_bytes(properties), names


@pytest.mark.parametrize(
    "fields", [{"message_id": "x" * 256}, {"headers": {"raw": b"\x00"}}, {"app_id": "a", "priority": 256}]
)
def test_values_pamqp_refuses_raise_pamqps_own_error(fields):
    properties = _copy_message(Message(b"", **fields)).properties
    with pytest.raises(Exception) as ours:
        properties.marshal()
    with pytest.raises(Exception) as theirs:
        _pamqp_bytes(properties)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)
    chained = ours.value
    while chained is not None:  # raised by pamqp alone, not while handling eventscope's fallback
        assert not isinstance(chained, Unusual)
        chained = chained.__context__
