"""Client-library adapters: one line wraps a channel, standard OpenTelemetry spans come out.

``eventscope.adapters.pika`` traces pika's blocking and async channels.
"""

__all__: list[str] = []
