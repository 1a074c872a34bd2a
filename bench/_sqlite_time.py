"""The time a ``crm sync`` spends inside SQLite: bench_imap's floor for the store process.

    python bench/_sqlite_time.py CONFIG [SOURCE ...]

Runs the sync as ``crm sync`` does (the reader process, the same
collection threshold), with the store's connection wrapped so that every
``execute`` / ``executemany`` (its rows fetched) is timed; prints JSON:
the run's wall time, the seconds inside those calls and their number.  The
wrapper costs time of its own, so the wall time here is not a figure to
compare; the seconds inside SQLite are: SQLite writing the rows, indexes and
full-text index the store keeps, and committing them, with no parsing,
linking or row building around it.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any


class _Rows:
    """A cursor whose rows were fetched inside the timed call."""

    def __init__(self, rows: list, cursor: Any):
        self._rows, self._cursor = rows, cursor

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list:
        return self._rows

    def __iter__(self):
        return iter(self._rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class TimedConnection:
    def __init__(self, conn: Any):
        self._conn = conn
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, sql: str, *args: Any) -> _Rows:
        t = time.perf_counter()
        cursor = self._conn.execute(sql, *args)
        rows = cursor.fetchall()
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return _Rows(rows, cursor)

    def executemany(self, sql: str, *args: Any) -> Any:
        t = time.perf_counter()
        cursor = self._conn.executemany(sql, *args)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return cursor


def main() -> int:
    from crm_bridge.crm_core.store import Store
    from crm_bridge.sync.config import load_config
    from crm_bridge.sync.engine import Engine, load_customers

    gc.set_threshold(50_000, 20, 100)  # as cli.sync
    config = load_config(sys.argv[1])
    store = Store(config.store_path, config.linking)
    timed = TimedConnection(store.conn)
    store.conn = timed
    load_customers(store, config)
    t = time.perf_counter()
    engine = Engine(config, store, parallel=True)
    results = engine.run(sys.argv[2:] or None)
    engine.close()
    store.close()
    print(json.dumps({"wall_s": time.perf_counter() - t, "sqlite_s": timed.seconds, "calls": timed.calls,
                      "ok": all(r.status == "ok" for r in results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
