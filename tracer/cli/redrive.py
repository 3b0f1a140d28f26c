"""``eventscope redrive``: dead letters back into the flow, through the collector.

The collector does the work (its ``POST /api/redrive``: it holds the store, records every
redrive with its actor, and is the one place the token and ``--allow-redrive`` guard); this
command says what to move and prints what happened. Browsing (``--list``, ``--groups``) reads
what the collector recorded and never touches the broker; it also works on a database file.

Never prompts when standard input is not a terminal (scripts, CI): it does what it was told,
prints what it moved and exits. Exit codes: 0 everything selected was sent (or, with
``--dry-run``, would be); 1 something was refused or failed, or nothing matched; 2 bad usage
or a request the collector refused (401, 403, 400, 409); 3 the collector cannot be reached.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from typing import Any

__all__ = ["register", "run"]

_TIMEOUT_S = 600.0  # a large DLQ takes a while: the collector answers when it is done
_LIST_COLUMNS = (
    "event_id",
    "event_type",
    "died_in",
    "reason",
    "deaths",
    "error_type",
    "dead_letter_queue",
    "redrives",
)
_GROUP_COLUMNS = (
    "messages",
    "event_type",
    "died_in",
    "reason",
    "error_type",
    "dead_letter_queue",
    "last_seen",
)


def register(commands: Any) -> None:
    """Add ``redrive`` to the subcommands (``collect``'s ``--allow-redrive`` & co. are in collect.py)."""
    parser = commands.add_parser(
        "redrive",
        help="dead letters back into the flow: browse, edit, redrive (through the collector)",
        description=(
            "Move dead-lettered messages back to where they came from (the exchange and routing key "
            "of their x-death) or to --to-queue: by event id, a whole dead-letter queue (--queue), or "
            "a failure group (--event-type/--reason/--error-type/--died-in). Orphans that left no "
            "message are replayed from their captured payload. Publisher confirms first, then ack: "
            "never lost. --list and --groups only read what the collector recorded."
        ),
    )
    parser.set_defaults(handler=run, needs="collector", quiet=True)
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--db", metavar="PATH", help="(--list/--groups only) a DuckDB file no collector holds"
    )
    target.add_argument("--api", metavar="URL", help="collector base URL (default $EVENTSCOPE_API or local)")
    parser.add_argument(
        "--token", metavar="TOKEN", help="the collector's bearer token (default $EVENTSCOPE_TOKEN)"
    )
    parser.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="events to redrive")
    parser.add_argument("--queue", metavar="DLQ", help="the dead-letter queue (alone: every message in it)")
    parser.add_argument("--event-type", metavar="TYPE", help="failure group: event type")
    parser.add_argument(
        "--reason", metavar="REASON", help="failure group: rejected, expired, maxlen, delivery_limit"
    )
    parser.add_argument("--error-type", metavar="TYPE", help="failure group: the consumer's error type")
    parser.add_argument("--died-in", metavar="QUEUE", help="failure group: the queue the messages died in")
    parser.add_argument("--to-queue", metavar="QUEUE", help="send to this queue instead of the origin")
    parser.add_argument("--edit-body", metavar="FILE", help="replace the body with FILE (JSON, size-capped)")
    parser.add_argument(
        "--edit-headers", metavar="FILE", help="merge the JSON object in FILE over the headers"
    )
    parser.add_argument("--limit", type=int, metavar="N", help="at most N messages")
    parser.add_argument(
        "--dry-run", action="store_true", help="print exactly what would be sent; move nothing"
    )
    parser.add_argument(
        "--yes", "-y", action="store_true", help="do not ask (never asked without a terminal)"
    )
    parser.add_argument("--actor", metavar="NAME", help="who to record (default user@host)")
    parser.add_argument("--json", action="store_true", help="print the collector's answer as JSON")
    browse = parser.add_mutually_exclusive_group()
    browse.add_argument("--list", action="store_true", help="list the dead letters (reads, never moves)")
    browse.add_argument("--groups", action="store_true", help="list the failure groups (reads, never moves)")


def run(args: argparse.Namespace) -> int:
    if args.list or args.groups:
        return _browse(args)
    if args.db:
        print("eventscope redrive: redriving goes through the collector (--api), not a file", file=sys.stderr)
        return 2
    group = {
        name: value
        for name, value in (
            ("event_type", args.event_type),
            ("reason", args.reason),
            ("error_type", args.error_type),
            ("died_in", args.died_in),
        )
        if value
    }
    if not args.event_ids and not args.queue and not group:
        print(
            "eventscope redrive: say what to redrive: EVENT_ID..., --queue DLQ, or a group "
            "(--event-type/--reason/--error-type/--died-in)",
            file=sys.stderr,
        )
        return 2
    document: dict[str, Any] = {
        "event_ids": list(args.event_ids),
        "queue": args.queue,
        "group": group,
        "to_queue": args.to_queue,
        "limit": args.limit,
        "actor": args.actor or f"{getpass.getuser()}@{socket.gethostname()} (cli)",
    }
    try:
        if args.edit_body:
            with open(args.edit_body, encoding="utf-8") as handle:
                document["body"] = handle.read()
        if args.edit_headers:
            with open(args.edit_headers, encoding="utf-8") as handle:
                document["headers"] = json.load(handle)
    except (OSError, ValueError) as exc:
        print(f"eventscope redrive: cannot read the edit: {exc}", file=sys.stderr)
        return 2
    interactive = sys.stdin.isatty() and not args.yes and not args.dry_run
    if interactive:
        status, answer = _post(args, {**document, "dry_run": True})
        if status != 0:
            return status
        count = answer["would_send"]
        _print(answer, dry_run=True, verbose=False)
        if count == 0:
            return 1
        reply = input(f"Redrive these {count} message(s)? [y/N] ").strip().lower()
        if reply not in ("y", "yes"):
            print("nothing moved")
            return 1
    status, answer = _post(args, {**document, "dry_run": args.dry_run})
    if status != 0:
        return status
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        _print(answer, dry_run=args.dry_run, verbose=args.dry_run)
    done = answer["would_send"] if args.dry_run else answer["sent"]
    return 0 if done and not answer["refused"] and not answer["failed"] else 1


def _post(args: argparse.Namespace, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    import httpx

    from eventscope.tracer.query.client import DEFAULT_API

    url = (args.api or os.environ.get("EVENTSCOPE_API") or DEFAULT_API).rstrip("/")
    token = args.token or os.environ.get("EVENTSCOPE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(f"{url}/api/redrive", json=document, headers=headers, timeout=_TIMEOUT_S)
    except httpx.HTTPError as exc:
        print(f"eventscope redrive: cannot reach the collector at {url} ({exc})", file=sys.stderr)
        return 3, {}
    if response.status_code != 200:
        try:
            message = response.json().get("error")
        except ValueError:
            message = response.text[:200]
        print(f"eventscope redrive: refused ({response.status_code}): {message}", file=sys.stderr)
        return 2, {}
    return 0, response.json()


def _print(answer: dict[str, Any], *, dry_run: bool, verbose: bool) -> None:
    for message in answer["messages"]:
        where = f"{message.get('exchange') or '(default)'} / {message.get('routing_key')}"
        source = message.get("from_queue") or "capture"
        line = f"{message['outcome']:<10} {message['event_id']}  {source} -> {where}"
        if message.get("redrive_count"):
            line += f"  (redrive #{message['redrive_count']}{', edited' if message.get('edited') else ''})"
        if message.get("error"):
            line += f"  : {message['error']}"
        print(line)
        if verbose and message["outcome"] == "would_send":
            print("    properties: " + json.dumps(message.get("properties"), sort_keys=True))
            print("    body: " + str(message.get("body")))
    if dry_run:
        print(f"dry run: {answer['would_send']} would be sent, {answer['refused']} refused; nothing moved")
    else:
        print(
            f"{answer['sent']} sent, {answer['refused']} refused, {answer['failed']} failed "
            f"(request {answer['request_id']}, actor {answer['actor']})"
        )


def _browse(args: argparse.Namespace) -> int:
    from eventscope.tracer.query.client import SourceError, open_source
    from eventscope.tracer.redrive import browse  # noqa: F401  (registers the questions)

    try:
        source = open_source(db=args.db, api=args.api, token=args.token)
        try:
            if args.groups:
                rows = source.ask("failure_groups", **({"queue": args.queue} if args.queue else {}))
                columns = _GROUP_COLUMNS
            else:
                filters = {
                    "queue": args.queue or args.died_in,
                    "event_type": args.event_type,
                    "reason": args.reason,
                    "error_type": args.error_type,
                    "limit": args.limit,
                }
                rows = source.ask(
                    "dead_letter_messages", **{k: v for k, v in filters.items() if v is not None}
                )
                columns = _LIST_COLUMNS
        finally:
            source.close()
    except SourceError as exc:
        print(f"eventscope redrive: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    widths = {
        c: max([len(c), *(len(str(r.get(c) if r.get(c) is not None else "")) for r in rows)]) for c in columns
    }
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c) if row.get(c) is not None else "").ljust(widths[c]) for c in columns))
    print(
        f"({len(rows)} {'groups' if args.groups else 'dead letters'}; read from what the collector recorded)"
    )
    return 0
