"""Wait until RabbitMQ completes an AMQP handshake on 127.0.0.1:5672 (exit 1 on timeout)."""

from __future__ import annotations

import argparse
import sys
import time

import pika


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    params = pika.ConnectionParameters(
        host=args.host, port=args.port, connection_attempts=1, socket_timeout=2
    )
    while True:
        try:
            pika.BlockingConnection(params).close()
            return 0
        except Exception as exc:
            if time.monotonic() > deadline:
                print(f"RabbitMQ not ready on {args.host}:{args.port}: {exc}", file=sys.stderr)
                return 1
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
