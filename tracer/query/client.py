"""Read access to eventscope data, live or post-mortem, behind one interface.

DuckDB allows one writer and, while it writes, no reader in another process. So the CLI
(and the dashboard) read through the running collector's HTTP API when there is one
(:class:`ApiSource`), and open the file read-only when there is none (:class:`FileSource`).
Both answer the same questions with the same shapes, because both end in the functions of
:mod:`eventscope.tracer.query.questions`.
"""

from __future__ import annotations

import io
import os
from typing import Any, Protocol

import duckdb

from eventscope.tracer.query import questions as queries

__all__ = ["DEFAULT_API", "ApiSource", "FileSource", "Source", "SourceError", "open_source"]

DEFAULT_API = "http://127.0.0.1:4318"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
_TIMEOUT_S = 60.0


class SourceError(RuntimeError):
    """The question could not be answered (unreachable collector, locked file, bad SQL...)."""


class Source(Protocol):
    def sql(self, query: str, *, arrow: bool = False) -> queries.SqlResult: ...

    def orphans(
        self, *, reason: str | None = None, grace_s: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]: ...

    def chain(self, event_id: str) -> list[dict[str, Any]]: ...

    def event(self, event_id: str) -> dict[str, Any] | None: ...

    def ask(self, question: str, **params: Any) -> Any:
        """The answer of ``queries.QUESTIONS[question]`` (JSON-ready shapes) with ``params``."""
        ...

    def health(self) -> dict[str, Any] | None:
        """The collector's own health (received, rejected, refused, dropped); None for a file."""
        ...

    def close(self) -> None: ...


class FileSource:
    """A DuckDB file no collector holds, opened read-only."""

    def __init__(self, path: str) -> None:
        from eventscope.tracer.store.duckdb_store import StoreLocked, connect_read_only

        try:
            self._connection = connect_read_only(path)
        except (StoreLocked, FileNotFoundError) as exc:
            raise SourceError(str(exc)) from None
        self._outdated = _outdated(self._connection, path)

    def _ask(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        cursor = self._connection.cursor()  # one per question: callers may share the source across threads
        try:
            return function(cursor, *args, **kwargs)
        except (queries.SqlRejected, queries.SqlError, queries.SqlTimeout) as exc:
            if self._outdated and "Catalog Error" in str(exc):  # what this eventscope adds is missing
                raise SourceError(f"{self._outdated}. {exc}") from None
            raise SourceError(str(exc)) from None
        finally:
            cursor.close()

    def sql(self, query: str, *, arrow: bool = False) -> queries.SqlResult:
        return self._ask(queries.run_sql, query, max_rows=None, timeout_s=None, arrow=arrow)

    def orphans(
        self, *, reason: str | None = None, grace_s: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return self._ask(queries.orphans, reason=reason, grace_s=grace_s, limit=limit)

    def chain(self, event_id: str) -> list[dict[str, Any]]:
        return self._ask(queries.chain, event_id)

    def event(self, event_id: str) -> dict[str, Any] | None:
        return self._ask(queries.event, event_id)

    def ask(self, question: str, **params: Any) -> Any:
        function = queries.QUESTIONS.get(question)
        if function is None:
            raise SourceError(f"unknown question {question!r}")
        return self._ask(function, **params)

    def health(self) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        self._connection.close()


def _outdated(connection: Any, path: str) -> str | None:
    """A hint when the file's schema is older than this eventscope's (read-only: not migrated)."""
    from eventscope.tracer.store.duckdb_store import SCHEMA_VERSION

    try:
        (version,) = connection.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0]
    except duckdb.Error:
        return None
    if version >= SCHEMA_VERSION:
        return None
    return (
        f"{path} has schema version {version}, this eventscope reads {SCHEMA_VERSION}: run "
        f"`eventscope collect --db {path}` once (then stop it) to migrate the file"
    )


class ApiSource:
    """A running collector, over its HTTP API (bearer token when it asks for one)."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=_TIMEOUT_S)

    def _get(self, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(kwargs.pop("method", "GET"), path, **kwargs)
        except httpx.HTTPError as exc:
            raise SourceError(
                f"cannot reach the collector at {self.url} ({exc}); is `eventscope collect` running? "
                "Without a collector, use --db PATH"
            ) from None
        if response.status_code == 401:
            raise SourceError("the collector wants a token: --token or EVENTSCOPE_TOKEN")
        if response.status_code != 200:
            try:
                message = response.json().get("error")
            except ValueError:
                message = None
            raise SourceError(message or f"HTTP {response.status_code}: {response.text[:200]}")
        return response

    def sql(self, query: str, *, arrow: bool = False) -> queries.SqlResult:
        if arrow:
            import pyarrow as pa

            response = self._get(
                "/api/sql", method="POST", json={"sql": query}, headers={"Accept": ARROW_STREAM}
            )
            table = pa.ipc.open_stream(io.BytesIO(response.content)).read_all()
            truncated = response.headers.get("X-Eventscope-Truncated") == "true"
            return queries.SqlResult(
                table.column_names, [str(t) for t in table.schema.types], [], truncated, table
            )
        document = self._get("/api/sql", method="POST", json={"sql": query}).json()
        rows = [tuple(row) for row in document["rows"]]
        return queries.SqlResult(document["columns"], document["types"], rows, bool(document["truncated"]))

    def orphans(
        self, *, reason: str | None = None, grace_s: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if reason:
            params["reason"] = reason
        if grace_s is not None:
            params["grace"] = grace_s
        return self._get("/api/orphans", params=params).json()["orphans"]

    def chain(self, event_id: str) -> list[dict[str, Any]]:
        return self._get(f"/api/chain/{event_id}").json()["chain"]

    def event(self, event_id: str) -> dict[str, Any] | None:
        import httpx

        try:
            response = self._http.get(f"/api/events/{event_id}")
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach the collector at {self.url} ({exc})") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise SourceError(f"HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def ask(self, question: str, **params: Any) -> Any:
        given = {name: _query_value(value) for name, value in params.items() if value is not None}
        return self._get(f"/api/{question}", params=given).json()["result"]

    def health(self) -> dict[str, Any] | None:
        state = self._get("/healthz").json()
        samples = _metric_samples(self._get("/metrics").text)
        return {
            **state,
            "spans_received": samples.get("eventscope_spans_received_total", 0.0),
            "spans_accepted": samples.get("eventscope_spans_accepted_total", 0.0),
            "spans_rejected": samples.get("eventscope_spans_rejected_total", 0.0),
            "requests_refused": samples.get("eventscope_requests_refused_total", 0.0),
            "dropped": samples.get("eventscope_dropped_total", 0.0),
        }

    def close(self) -> None:
        self._http.close()


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _metric_samples(text: str) -> dict[str, float]:
    """Prometheus text → {metric name: value summed over its labels}."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            samples[name] = samples.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return samples


class StoreSource(FileSource):
    """A ClickHouse or chDB store (``--store clickhouse://…|chdb://…``), read directly."""

    def __init__(self, url: str) -> None:
        from eventscope.tracer.store.urls import open_reader

        try:
            self._connection = open_reader(url)
        except (RuntimeError, ValueError) as exc:
            raise SourceError(str(exc)) from None
        self._outdated = None


def open_source(
    *, db: str | None = None, api: str | None = None, token: str | None = None, store: str | None = None
) -> Source:
    """A file when ``db`` is given, a store when ``store`` is (a DuckDB URL is a file), else the
    collector at ``api`` / ``$EVENTSCOPE_API`` / 4318.
    """
    if store:
        from eventscope.tracer.store.urls import parse_store_url

        try:
            parsed = parse_store_url(store)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        if parsed.kind != "duckdb":
            return StoreSource(store)
        db = parsed.path
    if db:
        return FileSource(db)
    return ApiSource(
        api or os.environ.get("EVENTSCOPE_API") or DEFAULT_API,
        token=token or os.environ.get("EVENTSCOPE_TOKEN"),
    )
