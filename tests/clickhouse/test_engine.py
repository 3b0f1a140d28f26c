"""The process's one chDB session, used from several threads at once (the writer, the follower
and the read API's threads all share it)."""

from __future__ import annotations

import threading
from pathlib import Path

from eventscope.tracer.store.clickhouse.engine import open_chdb


def test_threads_querying_with_parameters_each_get_their_own(chdb_path: Path) -> None:
    engine = open_chdb(str(chdb_path))
    wrong: list[str] = []

    def ask(n: int) -> None:
        try:
            for i in range(40):
                value = f"{n}-{i}"
                table = engine.query_arrow("SELECT {v:String} AS v", {"v": value})
                got = table.column("v").to_pylist()
                if got != [value]:
                    wrong.append(f"{value!r} came back as {got!r}")
        except Exception as error:  # every failure is what this test reports
            wrong.append(f"{value!r}: {error}")

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong, wrong[:5]
