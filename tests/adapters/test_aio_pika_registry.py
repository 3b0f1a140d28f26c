"""The aio-pika adapter's registries answer for the channel asked about, never for another one."""

from __future__ import annotations

import gc

from eventscope.adapters import aio_pika as adapter


class _Channel:
    """A stand-in channel: hashable and weakly referenceable, as aio-pika's are."""


class _Message:
    def __init__(self, channel: _Channel) -> None:
        self._IncomingMessage__channel = channel


def test_alternating_and_collected_channels_get_their_own_entries():
    first, second, unregistered = _Channel(), _Channel(), _Channel()
    tracings = {first: object(), second: object()}
    try:
        for channel, tracing in tracings.items():
            adapter._channels[channel] = tracing
        for _ in range(3):  # the last look-up is remembered: alternate so it must be replaced
            assert adapter._tracing_for(first) is tracings[first]
            assert adapter._tracing_for(first) is tracings[first]
            assert adapter._tracing_for(second) is tracings[second]
            assert adapter._tracing_for(unregistered) is None
        late = object()
        adapter._channels[unregistered] = late  # registered after a miss: found from then on
        assert adapter._tracing_for(unregistered) is late

        pending = {
            channel: adapter._settlements_for(_Message(channel), create=True) for channel in (first, second)
        }
        assert pending[first] is not pending[second]
        for _ in range(3):
            for channel in (first, second, first):
                assert adapter._settlements_for(_Message(channel), create=False) is pending[channel]
        assert adapter._settlements_for(_Message(_Channel()), create=False) is None
    finally:
        for channel in (first, second, unregistered):
            adapter._channels.pop(channel, None)
            adapter._settlements.pop(channel, None)

    # a collected channel is forgotten by the registries and by the remembered look-up alike
    gone = _Channel()
    adapter._channels[gone] = object()
    assert adapter._tracing_for(gone) is not None
    assert adapter._settlements_for(_Message(gone), create=True) is not None
    del gone
    gc.collect()
    assert adapter._last_tracing[0]() is None and adapter._last_settlements[0]() is None
    fresh = _Channel()
    assert adapter._tracing_for(fresh) is None
    assert adapter._settlements_for(_Message(fresh), create=False) is None
