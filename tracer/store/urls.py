"""``--store URL``: which store a command opens.

=============================  ==========================================================
``duckdb:///PATH``             the embedded default (``--db PATH`` is its shorthand)
``chdb:///DIR``                ClickHouse's engine in this process, tables under ``DIR``
``clickhouse://[USER[:PASSWORD]@]HOST[:PORT]/DB``  a ClickHouse server over HTTP
                               (clickhouse-connect; port 8123 by default; ``clickhouses://``
                               for HTTPS, port 8443)
=============================  ==========================================================

A plain path without a scheme is a DuckDB file, so ``--store eventscope.duckdb`` works too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["StoreUrl", "open_reader", "open_store", "parse_store_url"]

logger = logging.getLogger(__name__)

_HTTP_PORT = 8123
_HTTPS_PORT = 8443


@dataclass(frozen=True)
class StoreUrl:
    """A parsed ``--store`` URL; ``path`` for duckdb and chdb, the rest for clickhouse."""

    kind: str  # "duckdb" | "chdb" | "clickhouse"
    path: str = ""
    host: str = ""
    port: int = _HTTP_PORT
    database: str = "default"
    username: str = "default"
    password: str = ""
    secure: bool = False


def parse_store_url(url: str) -> StoreUrl:
    """Parse ``url``; ValueError (with the accepted forms) for anything else."""
    if "://" not in url:
        if not url:
            raise ValueError("empty store URL")
        return StoreUrl("duckdb", path=url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("duckdb", "chdb"):
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"{url!r}: {scheme}:///PATH needs a path")
        return StoreUrl(scheme, path=path)
    if scheme in ("clickhouse", "clickhouses"):
        if not parts.hostname:
            raise ValueError(f"{url!r}: clickhouse://HOST[:PORT]/DB needs a host")
        secure = scheme == "clickhouses"
        database = parts.path.strip("/") or "default"
        if "/" in database:
            raise ValueError(f"{url!r}: one database name after the host")
        return StoreUrl(
            "clickhouse",
            host=parts.hostname,
            port=parts.port or (_HTTPS_PORT if secure else _HTTP_PORT),
            database=database,
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            secure=secure,
        )
    raise ValueError(f"{url!r}: unknown store; use duckdb:///FILE, chdb:///DIR or clickhouse://HOST:8123/DB")


def _engine(parsed: StoreUrl) -> Any:
    from eventscope.tracer.store.clickhouse.engine import open_chdb, open_http

    if parsed.kind == "chdb":
        return open_chdb(parsed.path)
    return open_http(
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        username=parsed.username,
        password=parsed.password,
        secure=parsed.secure,
    )


def open_store(
    url: str, *, grace_s: float = 30.0, memory_limit: str = "1GB", threads: int | None = None
) -> Any:
    """The collector's store for ``url`` (a DuckDB path or any URL above)."""
    parsed = parse_store_url(url)
    if parsed.kind == "duckdb":
        from eventscope.tracer.store.duckdb_store import Store

        return Store.open(parsed.path, grace_s=grace_s, memory_limit=memory_limit, threads=threads)
    from eventscope.tracer.store.clickhouse.store import ClickHouseStore

    # on a server, the OpenTelemetry Collector writes spans too: derive them as they arrive
    return ClickHouseStore(_engine(parsed), url, grace_s=grace_s, follow=parsed.kind == "clickhouse")


class _Readers:
    """What query.client's file source needs of a connection: ``cursor()`` and ``close()``."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def cursor(self) -> Any:
        from eventscope.tracer.store.clickhouse.store import ReadConnection

        return ReadConnection(self._engine)

    def close(self) -> None:
        self._engine.close()


def open_reader(url: str) -> Any:
    """Read access to a ClickHouse or chDB store (the schema is applied if missing)."""
    parsed = parse_store_url(url)
    if parsed.kind == "duckdb":
        raise ValueError("open DuckDB files with duckdb_store.connect_read_only")
    from eventscope.tracer.store.clickhouse.store import apply_schema

    engine = _engine(parsed)
    apply_schema(engine)
    return _Readers(engine)
