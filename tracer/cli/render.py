"""Turning rows into text for people and pipes: aligned tables, CSV, JSON, rich trees.

``rich`` (the ``collector`` extra) is imported only when a terminal gets a rich table.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any

__all__ = ["cell", "chain_tree", "orphans_table", "rows_text"]

_ORPHAN_COLUMNS = ("reason", "event_type", "queue", "age_s", "event_id", "exchange", "routing_key")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def rows_text(kind: str, columns: list[str], rows: list[list[Any]]) -> str:
    """``rows`` as ``table`` (aligned, with a row count), ``csv`` or ``json`` text."""
    if kind == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2) + "\n"
    if kind == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell(v) for v in row] for row in rows)
        return out.getvalue()
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def orphans_table(rows: list[dict[str, Any]]) -> None:
    """A rich table on a terminal; plain aligned text (nothing cut) when piped."""
    cells = [[_orphan_cell(row, column) for column in _ORPHAN_COLUMNS] for row in rows]
    if not sys.stdout.isatty():
        sys.stdout.write(rows_text("table", list(_ORPHAN_COLUMNS), cells))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} orphan{'s' if len(rows) != 1 else ''}", title_justify="left")
    for column in _ORPHAN_COLUMNS:
        table.add_column(column, justify="right" if column == "age_s" else "left", overflow="fold")
    for row in cells:
        table.add_row(*row)
    Console().print(table)


def _orphan_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column == "age_s" and isinstance(value, int | float):
        return f"{value:.1f}"
    return cell(value)


def chain_tree(rows: list[dict[str, Any]]) -> None:
    """The causal chain as a tree, root first; each row hangs under its cause."""
    from rich.console import Console
    from rich.tree import Tree

    def label(row: dict[str, Any]) -> str:
        producer = row.get("producer_service") or "?"
        route = "/".join(p for p in (row.get("exchange"), row.get("routing_key")) if p)
        return (
            f"[bold]{row.get('event_type') or '(unknown type)'}[/] {row['event_id']} "
            f"[dim]by {producer} via {route or 'amq.default'}, {row.get('deliveries', 0)} deliveries[/]"
        )

    nodes: dict[str, Tree] = {}
    root = Tree(label(rows[0]))
    nodes[rows[0]["event_id"]] = root
    for row in rows[1:]:
        parent = nodes.get(row.get("cause_event_id") or "", root)
        nodes[row["event_id"]] = parent.add(label(row))
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 10_000).print(root)
