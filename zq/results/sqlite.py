"""The SQLite store, the default: one file in the router's data dir."""

from __future__ import annotations

import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

from .. import protocol
from .store import Row, is_expired, is_ready

logger = logging.getLogger("zq.results")

FILENAME = "results.sqlite3"
_CACHE_ROWS = 50_000
# SQLite takes at most 999 parameters in a statement in older builds.
_IDS_PER_SELECT = 500

# The layout. A row's key ``k`` orders the rows as expiry and snapshots read them: the
# unfinished ones first, then by the second of their ``ts``, then in the order they were
# written. The key is all the table needs besides the index on the task id, so a write
# touches two B-trees (the table's end and the id index) where a table with an index
# on (ready, ts) as well touches three: about 2.6 pages per single-row transaction
# instead of 3.7. Within a second, a row gets the key after the last one there.
_READY = 1 << 62
_ORDER_BITS = 29  # rows per second of ts: 536 million
_LAST_IN_SECOND = (1 << _ORDER_BITS) - 1
_LAST_SECOND = (1 << 33) - 1  # 2242; a ts past it (or not above 0) counts as its end (or 0)
_CREATE = ("CREATE TABLE results (k INTEGER PRIMARY KEY CHECK (k >= 0), "
           "id TEXT NOT NULL, state TEXT NOT NULL, ts REAL NOT NULL, row BLOB NOT NULL)")
_INDEX = "CREATE UNIQUE INDEX results_id ON results (id)"
# The key is one past the last in the row's second, so it is never another row's: REPLACE
# replaces only the row of the same id. A second with no room left gives k = -1, which the
# CHECK refuses (REPLACE does not apply to a CHECK), rather than a key out of its second.
_PUT = ("INSERT OR REPLACE INTO results (k, id, state, ts, row) VALUES ("
        "(SELECT CASE WHEN max(k) IS NULL THEN ?1 WHEN max(k) < ?2 THEN max(k) + 1 ELSE -1 END "
        "FROM results WHERE k BETWEEN ?1 AND ?2), ?3, ?4, ?5, ?6)")

# The layout before it, (id TEXT PRIMARY KEY, state, ready, ts, row) with an index on
# (ready, ts), is moved to this one when the store opens, in one transaction, if it holds
# at most this many rows (a few seconds' work); a larger one is used as it is.
_MIGRATE_UP_TO = 250_000
_PREVIOUS_PUT = "INSERT OR REPLACE INTO results (id, state, ready, ts, row) VALUES (?,?,?,?,?)"

# Ids that end in a counter: 24 characters, then 12 lowercase hex digits, as zq.utils.new_id
# makes them (a prefix per client process). For such a prefix the store keeps a bound: no
# stored id with it has a higher counter. A task is asked for as soon as it is sent (its
# SENT event), before anything of it can be stored, and its counter is then almost always
# past the bound (its client's earlier tasks are what was stored), so the store knows it
# holds no such row without reading the file. The bound is learnt on the second id of a
# prefix asked for (one read: the highest stored id with it), raised before every write of
# an id with it, and never lowered; prefixes are forgotten first-in first-out.
_PREFIX = 24
_COUNTER = 12
_NO_BOUND = 1 << (4 * _COUNTER)  # above any counter: nothing is known absent
_PREFIXES_KEPT = 10_000


def _second(ts: float) -> int:
    """The second of ``ts`` the key orders by."""
    if not ts > 0:  # NaN too
        return 0
    if ts >= _LAST_SECOND:
        return _LAST_SECOND
    return int(ts)


def _counted(task_id: str) -> tuple[str, int] | None:
    """The prefix and counter of an id that ends in a counter, else None."""
    if len(task_id) != _PREFIX + _COUNTER:
        return None
    tail = task_id[_PREFIX:]
    try:
        count = int(tail, 16)
    except ValueError:
        return None
    if f"{count:012x}" != tail:  # int() takes upper case, signs, spaces and underscores
        return None
    return task_id[:_PREFIX], count


def _first_key(ready: bool, ts: float) -> int:
    """The lowest key a row that is ``ready`` (or not) with this ``ts`` may get."""
    return (_READY if ready else 0) | (_second(ts) << _ORDER_BITS)


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
        columns = {name for _, name, *_ in self._db.execute("PRAGMA table_info(results)")}
        if not columns:
            self._db.execute(_CREATE)
            self._db.execute(_INDEX)
            self.keyed = True
        else:
            # Whether the table has the current layout (else the previous one).
            self.keyed = "k" in columns or self._migrate()
        self._cache: OrderedDict[str, Row] = OrderedDict()
        self._bounds: dict[str, int] = {}  # prefix -> no stored id has a higher counter
        self._met: dict[str, int] = {}  # prefixes asked for once, with no bound yet

    def _migrate(self) -> bool:
        """Move the rows of the previous layout to the current one; False when it stays."""
        (count,) = self._db.execute("SELECT count(*) FROM (SELECT 1 FROM results LIMIT ?)",
                                    (_MIGRATE_UP_TO + 1,)).fetchone()
        if count > _MIGRATE_UP_TO:
            logger.info("the results store holds over %d results in its previous layout; "
                        "keeping that layout", _MIGRATE_UP_TO)
            return False
        self._db.execute("BEGIN")
        try:
            self._db.execute("ALTER TABLE results RENAME TO results_previous")
            self._db.execute(_CREATE)
            self._db.executemany(
                "INSERT INTO results (k, id, state, ts, row) VALUES (?,?,?,?,?)",
                _keyed(self._db.execute("SELECT id, state, ready, ts, row FROM "
                                        "results_previous ORDER BY ready, ts")))
            self._db.execute("DROP TABLE results_previous")
            self._db.execute(_INDEX)  # built once, sorted, rather than row by row
            self._db.execute("COMMIT")
        except Exception as exc:
            self._db.execute("ROLLBACK")
            logger.warning("keeping the previous layout of the results store: moving its "
                           "%d rows failed: %s", count, exc)
            return False
        logger.info("moved the %d results of the store to its current layout", count)
        return True

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
            elif not self._surely_absent(i):
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

    def _surely_absent(self, task_id: str) -> bool:
        """Whether no row of ``task_id`` is stored, known without reading the file."""
        counted = _counted(task_id)
        if counted is None:
            return False
        prefix, count = counted
        bound = self._bounds.get(prefix)
        if bound is None:
            if prefix not in self._met:
                _keep(self._met, prefix, 0)
                return False
            del self._met[prefix]
            bound = self._highest(prefix)
            _keep(self._bounds, prefix, bound)
        return count > bound

    def _highest(self, prefix: str) -> int:
        """The highest counter of a stored id with ``prefix``; -1 for none."""
        # Every id between these two starts with the prefix, and those that end in a
        # counter sort as their counters do: the one that sorts last bounds them all.
        (highest,) = self._db.execute("SELECT max(id) FROM results WHERE id BETWEEN ? AND ?",
                                      (prefix + "0" * _COUNTER, prefix + "f" * _COUNTER),
                                      ).fetchone()
        if highest is None:
            return -1
        counted = _counted(highest)
        return _NO_BOUND if counted is None else counted[1]  # another kind of id sorts last

    def put_many(self, rows: list[Row]) -> None:
        for row in rows:  # first: a bound may be too high, never too low
            counted = _counted(row["id"])
            if counted is not None:
                bound = self._bounds.get(counted[0])
                if bound is not None and counted[1] > bound:
                    self._bounds[counted[0]] = counted[1]
        self._db.execute("BEGIN")
        try:
            if self.keyed:
                params = []
                for r in rows:
                    ts = r.get("ts", 0.0)
                    first = _first_key(is_ready(r), ts)
                    params.append((first, first | _LAST_IN_SECOND, r["id"], r["state"], ts,
                                   protocol.pack(r)))
                self._db.executemany(_PUT, params)
            else:
                self._db.executemany(
                    _PREVIOUS_PUT,
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
        if self.keyed:
            # Every finished row stamped before then has a key up to the end of its second.
            cursor = self._db.execute(
                "DELETE FROM results WHERE k BETWEEN ? AND ? AND ts < ?",
                (_READY, _first_key(True, before_ts) | _LAST_IN_SECOND, before_ts))
        else:
            cursor = self._db.execute("DELETE FROM results WHERE ready = 1 AND ts < ?",
                                      (before_ts,))
        if cursor.rowcount:
            self._cache = OrderedDict((k, v) for k, v in self._cache.items()
                                      if not is_expired(v, before_ts))
        return cursor.rowcount

    def unready(self, limit: int) -> list[Row]:
        if self.keyed:
            cursor = self._db.execute("SELECT row FROM results WHERE k < ? LIMIT ?",
                                      (_READY, limit))
        else:
            cursor = self._db.execute("SELECT row FROM results WHERE ready = 0 LIMIT ?",
                                      (limit,))
        return [protocol.unpack(blob) for (blob,) in cursor]

    def close(self) -> None:
        self._db.close()


def _keep(kept: dict[str, int], key: str, value: int) -> None:
    """Add to a first-in first-out memory of at most _PREFIXES_KEPT entries."""
    kept[key] = value
    if len(kept) > _PREFIXES_KEPT:
        del kept[next(iter(kept))]


def _keyed(rows: Iterable[tuple[str, str, int, float, bytes]],
           ) -> Iterator[tuple[int, str, str, float, bytes]]:
    """The previous layout's rows, read in (ready, ts) order, with their keys."""
    first, following = -1, 0
    for task_id, state, ready, ts, blob in rows:
        key = _first_key(bool(ready), ts)
        if key != first:
            first, following = key, key
        if following > first | _LAST_IN_SECOND:
            raise ValueError(f"more than {_LAST_IN_SECOND + 1} rows in one second")
        yield following, task_id, state, ts, blob
        following += 1

