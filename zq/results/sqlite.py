"""The SQLite store, the default: one file in the router's data dir."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from .. import protocol
from .store import Row, is_expired, is_ready

FILENAME = "results.sqlite3"
_CACHE_ROWS = 50_000
# SQLite takes at most 999 parameters in a statement in older builds.
_IDS_PER_SELECT = 500


class SQLiteStore:
    """States in one SQLite file; each ``put_many`` is one transaction.

    Each row is kept whole as msgpack next to the columns that expiry and snapshots
    select on. The rows read or written last are cached, since a task's result is
    usually asked for soon after it is stored.
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process being killed; only an
        # operating-system crash can lose the last transactions.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # An expiry sweep deletes many rows in one transaction; without a limit the WAL
        # file would keep the size of the largest sweep for good.
        self._db.execute("PRAGMA journal_size_limit=8388608")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, state TEXT NOT NULL, "
            "ready INTEGER NOT NULL, ts REAL NOT NULL, row BLOB NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS results_ready_ts ON results (ready, ts)")
        self._cache: OrderedDict[str, Row] = OrderedDict()

    def _remember(self, row: Row) -> None:
        self._cache[row["id"]] = row
        self._cache.move_to_end(row["id"])
        if len(self._cache) > _CACHE_ROWS:
            self._cache.popitem(last=False)

    def get_many(self, ids: Iterable[str]) -> dict[str, Row]:
        found: dict[str, Row] = {}
        missing = []
        for i in ids:
            cached = self._cache.get(i)
            if cached is not None:
                found[i] = cached
            else:
                missing.append(i)
        for start in range(0, len(missing), _IDS_PER_SELECT):
            chunk = missing[start:start + _IDS_PER_SELECT]
            marks = ",".join("?" * len(chunk))
            for (blob,) in self._db.execute(
                    f"SELECT row FROM results WHERE id IN ({marks})", chunk):  # noqa: S608
                row: Row = protocol.unpack(blob)
                found[row["id"]] = row
                self._remember(row)
        return found

    def put_many(self, rows: list[Row]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (id, state, ready, ts, row) VALUES (?,?,?,?,?)",
                [(r["id"], r["state"], is_ready(r), r.get("ts", 0.0), protocol.pack(r))
                 for r in rows])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for row in rows:
            self._remember(row)

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for i in ids:
            self._cache.pop(i, None)
        self._db.executemany("DELETE FROM results WHERE id = ?", [(i,) for i in ids])

    def expire(self, before_ts: float) -> int:
        cursor = self._db.execute("DELETE FROM results WHERE ready = 1 AND ts < ?", (before_ts,))
        if cursor.rowcount:
            self._cache = OrderedDict((k, v) for k, v in self._cache.items()
                                      if not is_expired(v, before_ts))
        return cursor.rowcount

    def unready(self, limit: int) -> list[Row]:
        return [protocol.unpack(blob) for (blob,) in self._db.execute(
            "SELECT row FROM results WHERE ready = 0 LIMIT ?", (limit,))]

    def close(self) -> None:
        self._db.close()
