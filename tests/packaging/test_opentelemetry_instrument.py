"""``opentelemetry-instrument python app.py``: the ``eventscope_pika`` entry point, for real.

The app below imports nothing of eventscope: only the installed entry point can trace it.
OpenTelemetry's own pika instrumentation is installed too (the test extra), so its entry
point loads as well: each publish and each delivery must still yield exactly one span.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eventscope.tracer.contract import MESSAGING_MESSAGE_ID
from eventscope.tracer.testing import OtlpReceiver

pytestmark = pytest.mark.integration

_APP = textwrap.dedent(
    """
    import os, sys, time
    import pika

    queue, count = sys.argv[1], int(sys.argv[2])
    params = pika.ConnectionParameters(
        "127.0.0.1", 5672, virtual_host=os.environ["EVENTSCOPE_TEST_VHOST"],
        credentials=pika.PlainCredentials("guest", "guest"),
    )
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    print(type(channel).__name__, flush=True)
    for i in range(count):
        channel.basic_publish("", queue, b"x", pika.BasicProperties(message_id=f"m-{i}"))
    got = 0
    deadline = time.monotonic() + 10
    while got < count and time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue)
        if method is None:
            time.sleep(0.02)
            continue
        channel.basic_ack(method.delivery_tag)
        got += 1
    connection.close()
    print(got, flush=True)
    """
)


def _instrument(tmp_path: Path, receiver: OtlpReceiver, queue: str, service: str, **env: str) -> list[str]:
    command = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert command, "opentelemetry-instrument is installed with the test extra"
    app = tmp_path / "app.py"
    app.write_text(_APP)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(
        OTEL_SERVICE_NAME=service,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",
        **env,
    )
    proc = subprocess.run(
        [command, sys.executable, str(app), queue, "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout.split()


def _messaging(receiver: OtlpReceiver, service: str, count: int) -> list[Any]:
    return receiver.wait_for(
        lambda s: s.service == service and s.kind in ("PRODUCER", "CONSUMER"), count=count, timeout=10
    )


def test_opentelemetry_instrument_switches_the_pika_adapter_on(amqp: Any, tmp_path: Path) -> None:
    queue = amqp.queue()
    service = f"auto-{uuid.uuid4().hex[:8]}"
    with OtlpReceiver() as receiver:
        channel_type, got = _instrument(tmp_path, receiver, queue, service)
        found = _messaging(receiver, service, 4)
    assert (channel_type, got) == ("TracedBlockingChannel", "2")
    by_message = Counter((s.kind, s.attributes.get(MESSAGING_MESSAGE_ID)) for s in found)
    # One span per operation although OpenTelemetry's pika instrumentor is loaded as well.
    assert by_message == {(kind, f"m-{i}"): 1 for kind in ("PRODUCER", "CONSUMER") for i in range(2)}
    assert {s.name.split()[0] for s in found} == {"publish", "receive"}  # eventscope's span names


def test_disabled_instrumentations_keep_the_adapter_off(amqp: Any, tmp_path: Path) -> None:
    queue = amqp.queue()
    service = f"auto-off-{uuid.uuid4().hex[:8]}"
    with OtlpReceiver() as receiver:
        channel_type, got = _instrument(
            tmp_path, receiver, queue, service, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="eventscope_pika"
        )
        found = receiver.find(lambda s: s.service == service)
    assert (channel_type, got) == ("BlockingChannel", "2")
    assert not [s for s in found if s.name.startswith(("publish ", "receive ", "process "))]
