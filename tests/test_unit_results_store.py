"""zq.results stores through the Store protocol, and the state table above them.

Every test of the protocol runs on both stores; tests of what only a file can do
(surviving a reopen, reading past the cache) run on SQLite alone. No sockets.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from zq import protocol
from zq.results import MemoryStore, ResultsConfig, SQLiteStore, Store
from zq.results.config import open_store
from zq.results import sqlite as sqlite_module
from zq.results.sqlite import FILENAME
from zq.results.table import StateTable
from zq.states import FAILURE, PENDING, READY_STATES, RETRY, SENT, STARTED, SUCCESS
from zq.utils import new_id

Row = dict[str, Any]


def row(task_id: str, state: str, ts: float = 1000.0, **fields: Any) -> Row:
    return {"id": task_id, "state": state, "ts": ts, "retries": 0, "version": 1, **fields}


# The layout of the results table before it was keyed by (ready, second of ts, order).
PREVIOUS_LAYOUT = (
    "CREATE TABLE results (id TEXT PRIMARY KEY, state TEXT NOT NULL, ready INTEGER NOT NULL, "
    "ts REAL NOT NULL, row BLOB NOT NULL)",
    "CREATE INDEX results_ready_ts ON results (ready, ts)")


def previous_layout(path: Path, rows: Sequence[Row] = ()) -> None:
    """A results file as the previous layout wrote it, holding ``rows``."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in PREVIOUS_LAYOUT:
        db.execute(statement)
    db.executemany("INSERT INTO results (id, state, ready, ts, row) VALUES (?,?,?,?,?)",
                   [(r["id"], r["state"], r["state"] in READY_STATES, r.get("ts", 0.0),
                     protocol.pack(r)) for r in rows])
    db.close()


def layout(path: Path) -> set[str]:
    db = sqlite3.connect(str(path))
    try:
        return {name for _, name, *_ in db.execute("PRAGMA table_info(results)")}
    finally:
        db.close()


@pytest.fixture(params=["memory", "sqlite", "sqlite-previous-layout"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path / FILENAME)
    else:  # a file of the previous layout too large to move: it is used as it is
        previous_layout(tmp_path / FILENAME)
        monkeypatch.setattr(sqlite_module, "_MIGRATE_UP_TO", -1)
        made = SQLiteStore(tmp_path / FILENAME)
        assert not made.keyed
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def reopen(tmp_path: Path) -> Iterator[Callable[[], SQLiteStore]]:
    """Open the SQLite file afresh each call (an empty cache, as after a restart)."""
    opened: list[SQLiteStore] = []

    def open_again() -> SQLiteStore:
        if opened:
            opened[-1].close()
        opened.append(SQLiteStore(tmp_path / FILENAME))
        return opened[-1]

    try:
        yield open_again
    finally:
        if opened:
            opened[-1].close()


# -- the Store protocol, on both stores ----------------------------------------------------

def test_unknown_ids_are_absent(store: Store) -> None:
    assert store.get_many(["nobody"]) == {}
    assert store.get_many([]) == {}


def test_stored_rows_come_back_whole_and_only_those_asked_for(store: Store) -> None:
    done = row("a", SUCCESS, ct="application/x-msgpack", body=protocol.pack([1, "two"]),
               name="proj.add", copy="a\x1fq1")
    failed = row("b", FAILURE, exc={"type": "KeyError", "module": "builtins",
                                    "message": "'k'", "args": ["k"], "traceback": None})
    store.put_many([done, failed, row("c", STARTED)])
    assert store.get_many(["a", "b", "x"]) == {"a": done, "b": failed}


def test_a_row_replaces_the_row_of_its_id(store: Store) -> None:
    store.put_many([row("a", STARTED)])
    store.put_many([row("a", SUCCESS, version=2)])
    assert store.get_many(["a"])["a"]["state"] == SUCCESS
    assert store.get_many(["a"])["a"]["version"] == 2


def test_deleted_rows_are_gone_and_unknown_ids_are_ignored(store: Store) -> None:
    store.put_many([row("a", SUCCESS), row("b", SUCCESS)])
    store.delete(["a", "nobody"])
    assert store.get_many(["a", "b"]).keys() == {"b"}


def test_expire_removes_only_finished_rows_stamped_before_the_cutoff(store: Store) -> None:
    store.put_many([row("old-done", SUCCESS, ts=10.0), row("old-failed", FAILURE, ts=10.0),
                    row("new-done", SUCCESS, ts=30.0), row("old-running", STARTED, ts=10.0),
                    row("old-retry", RETRY, ts=10.0)])
    assert store.expire(20.0) == 2
    assert store.get_many(["old-done", "old-failed", "new-done", "old-running",
                           "old-retry"]).keys() == {"new-done", "old-running", "old-retry"}
    assert store.expire(20.0) == 0


def test_a_finished_row_without_a_stamp_counts_as_stamped_at_zero(store: Store) -> None:
    unstamped = {"id": "a", "state": SUCCESS}
    store.put_many([unstamped])
    assert store.expire(1.0) == 1
    assert store.get_many(["a"]) == {}


def test_unready_lists_unfinished_rows_up_to_the_limit(store: Store) -> None:
    store.put_many([row("done", SUCCESS)] + [row(f"run-{i}", STARTED) for i in range(5)])
    assert {r["id"] for r in store.unready(10)} == {f"run-{i}" for i in range(5)}
    assert len(store.unready(3)) == 3
    assert store.unready(0) == []


def test_many_ids_at_once(store: Store) -> None:
    rows = [row(f"t-{i}", SUCCESS) for i in range(1200)]
    store.put_many(rows)
    ids = [f"t-{i}" for i in range(1200)] + ["missing"]
    assert store.get_many(ids) == {r["id"]: r for r in rows}


# -- what only the SQLite file does --------------------------------------------------------

def test_sqlite_rows_survive_a_reopen(reopen: Callable[[], SQLiteStore]) -> None:
    first = reopen()
    first.put_many([row("a", SUCCESS, body=b"\x00\xff", ct="x"), row("b", STARTED)])
    again = reopen()
    assert again.get_many(["a", "b"]) == {"a": row("a", SUCCESS, body=b"\x00\xff", ct="x"),
                                          "b": row("b", STARTED)}
    assert again.unready(10) == [row("b", STARTED)]


def test_sqlite_reads_many_uncached_ids_from_the_file(reopen: Callable[[], SQLiteStore]
                                                     ) -> None:
    reopen().put_many([row(f"t-{i}", SUCCESS) for i in range(1200)])
    found = reopen().get_many([f"t-{i}" for i in range(1200)])
    assert len(found) == 1200
    assert found["t-1199"] == row("t-1199", SUCCESS)


def test_sqlite_expire_and_delete_reach_the_cache_and_the_file(
        reopen: Callable[[], SQLiteStore]) -> None:
    store = reopen()
    store.put_many([row("old", SUCCESS, ts=10.0), row("gone", SUCCESS, ts=50.0),
                    row("kept", SUCCESS, ts=50.0)])
    assert store.expire(20.0) == 1
    store.delete(["gone"])
    assert store.get_many(["old", "gone", "kept"]).keys() == {"kept"}
    assert reopen().get_many(["old", "gone", "kept"]).keys() == {"kept"}


def test_sqlite_reads_back_an_exception_whose_data_has_integer_keys(
        reopen: Callable[[], SQLiteStore]) -> None:
    """Events arrive as msgpack that may hold integer map keys; what is stored reads back."""
    failed = row("a", FAILURE, exc={"type": "E", "module": "m", "message": "", 1: "one"})
    reopen().put_many([failed])
    assert reopen().get_many(["a"]) == {"a": failed}


def test_sqlite_batch_that_fails_writes_nothing(reopen: Callable[[], SQLiteStore]) -> None:
    store = reopen()
    with pytest.raises(TypeError):
        store.put_many([row("good", SUCCESS), row("bad", SUCCESS, meta={1, 2})])
    assert store.get_many(["good", "bad"]) == {}
    assert reopen().get_many(["good", "bad"]) == {}


def test_sqlite_expires_by_the_exact_stamp_within_a_second(
        reopen: Callable[[], SQLiteStore]) -> None:
    store = reopen()
    store.put_many([row("a", SUCCESS, ts=100.2), row("b", SUCCESS, ts=100.7),
                    row("c", FAILURE, ts=101.0), row("d", STARTED, ts=100.1)])
    assert store.expire(100.5) == 1
    assert store.expire(100.7) == 0
    assert reopen().get_many(["a", "b", "c", "d"]).keys() == {"b", "c", "d"}
    assert reopen().expire(101.5) == 2


def test_sqlite_takes_any_stamp(reopen: Callable[[], SQLiteStore]) -> None:
    stamps = {"zero": 0.0, "negative": -5.0, "whole": 7, "far": 1e300, "infinite": float("inf"),
              "late": 2.0 ** 40}
    reopen().put_many([row(name, SUCCESS, ts=ts) for name, ts in stamps.items()])
    store = reopen()
    assert {name: r["ts"] for name, r in store.get_many(stamps).items()} == stamps
    assert store.expire(1.0) == 2
    assert store.expire(float("inf")) == 3
    assert reopen().get_many(stamps).keys() == {"infinite"}


def test_sqlite_lists_unfinished_rows_oldest_first(reopen: Callable[[], SQLiteStore]) -> None:
    store = reopen()
    store.put_many([row("c", STARTED, ts=30.0), row("a", STARTED, ts=10.0),
                    row("done", SUCCESS, ts=1.0), row("b", RETRY, ts=20.5)])
    assert [r["id"] for r in store.unready(2)] == ["a", "b"]
    # A row that finishes leaves the unfinished ones, and expires by its new stamp.
    store.put_many([row("a", SUCCESS, ts=40.0, version=2)])
    assert [r["id"] for r in reopen().unready(10)] == ["b", "c"]
    assert reopen().expire(35.0) == 1
    assert reopen().get_many(["a", "done"]).keys() == {"a"}


def test_sqlite_second_with_no_room_left_refuses_the_row(
        reopen: Callable[[], SQLiteStore], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "_ORDER_BITS", 1)
    monkeypatch.setattr(sqlite_module, "_LAST_IN_SECOND", 1)
    store = reopen()
    store.put_many([row("a", SUCCESS, ts=5.1), row("b", SUCCESS, ts=5.9)])
    with pytest.raises(sqlite3.IntegrityError):
        store.put_many([row("c", SUCCESS, ts=5.5)])
    # The next second has room, for new rows and for one that moves there.
    store.put_many([row("d", SUCCESS, ts=6.0), row("a", SUCCESS, ts=6.5, version=2)])
    again = reopen()
    assert again.get_many(["a", "b", "c", "d"]).keys() == {"a", "b", "d"}
    assert again.get_many(["a"])["a"]["version"] == 2
    assert again.expire(5.95) == 1
    assert again.expire(6.6) == 2


def test_sqlite_previous_layout_is_moved_to_the_current_one(tmp_path: Path) -> None:
    rows = [row("done", SUCCESS, ts=10.0, body=b"\x00", ct="x"), row("run", STARTED, ts=5.0),
            row("failed", FAILURE, ts=30.0, exc={"type": "E", "module": "m", "message": "",
                                                 1: "one"}),
            row("retry", RETRY, ts=20.0)] + [row(f"t-{i}", SUCCESS, ts=50.5) for i in range(5)]
    previous_layout(tmp_path / FILENAME, rows)
    store = SQLiteStore(tmp_path / FILENAME)
    try:
        assert store.keyed and "k" in layout(tmp_path / FILENAME)
        ids = [r["id"] for r in rows]
        assert store.get_many(ids) == {r["id"]: r for r in rows}
        assert [r["id"] for r in store.unready(10)] == ["run", "retry"]
        assert store.expire(40.0) == 2
        store.put_many([row("new", SUCCESS, ts=50.7)])
        assert store.expire(50.6) == 5
        assert store.get_many(ids + ["new"]).keys() == {"run", "retry", "new"}
    finally:
        store.close()


def test_sqlite_previous_layout_too_large_to_move_is_kept_and_moved_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous_layout(tmp_path / FILENAME, [row("a", SUCCESS), row("b", SUCCESS)])
    monkeypatch.setattr(sqlite_module, "_MIGRATE_UP_TO", 1)
    store = SQLiteStore(tmp_path / FILENAME)
    try:
        assert not store.keyed and "k" not in layout(tmp_path / FILENAME)
        store.put_many([row("c", STARTED)])
        assert store.get_many(["a", "b", "c"]).keys() == {"a", "b", "c"}
    finally:
        store.close()
    monkeypatch.setattr(sqlite_module, "_MIGRATE_UP_TO", 3)
    store = SQLiteStore(tmp_path / FILENAME)
    try:
        assert store.keyed
        assert store.get_many(["a", "b", "c"]).keys() == {"a", "b", "c"}
        assert [r["id"] for r in store.unready(10)] == ["c"]
    finally:
        store.close()


def test_sqlite_previous_layout_that_cannot_be_moved_is_kept_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three finished rows in one second, where the current layout would have room for two.
    rows = [row(f"t-{i}", SUCCESS, ts=7.0 + i / 10) for i in range(3)]
    previous_layout(tmp_path / FILENAME, rows)
    monkeypatch.setattr(sqlite_module, "_ORDER_BITS", 1)
    monkeypatch.setattr(sqlite_module, "_LAST_IN_SECOND", 1)
    store = SQLiteStore(tmp_path / FILENAME)
    try:
        assert not store.keyed and "k" not in layout(tmp_path / FILENAME)
        assert store.get_many([r["id"] for r in rows]) == {r["id"]: r for r in rows}
    finally:
        store.close()


def test_open_store_picks_the_backend_and_the_file(tmp_path: Path) -> None:
    def config(backend: str, data_dir: Path | None) -> ResultsConfig:
        return ResultsConfig(ingest="", query="", pub="", data_dir=data_dir, backend=backend)

    for made in (open_store(config("memory", tmp_path)), open_store(config("sqlite", None))):
        assert isinstance(made, MemoryStore)
        made.close()
    made = open_store(config("sqlite", tmp_path / "data"))
    assert isinstance(made, SQLiteStore)
    made.close()
    assert (tmp_path / "data" / "results.sqlite3").is_file()


# -- the state table over a store ----------------------------------------------------------

@pytest.fixture
def table(store: Store) -> StateTable:
    return StateTable(store)


def event(task_id: str, state: str, **fields: Any) -> Row:
    return protocol.state_event(task_id, state, **fields)


def test_sent_is_kept_in_memory_and_later_states_in_the_store(table: StateTable) -> None:
    [sent] = table.apply([event("a", SENT, name="proj.add")], now=5.0)
    assert sent == {"id": "a", "state": SENT, "retries": 0, "name": "proj.add", "ts": 5.0,
                    "version": 1}
    assert table.lookup(["a"]) == {"a": sent}
    assert table.store.get_many(["a"]) == {}
    [started] = table.apply([event("a", STARTED)], now=6.0)
    assert started["name"] == "proj.add" and started["version"] == 2
    assert table.store.get_many(["a"]) == {"a": started}
    assert table.lookup(["a"]) == {"a": started}


def test_a_batch_writes_the_last_change_of_each_task_and_returns_every_change(
        table: StateTable) -> None:
    changed = table.apply([event("a", STARTED), event("a", SUCCESS, ts=9.0),
                           event("b", STARTED)], now=8.0)
    assert [(r["id"], r["state"], r["version"]) for r in changed] == [
        ("a", STARTED, 1), ("a", SUCCESS, 2), ("b", STARTED, 1)]
    assert table.store.get_many(["a"])["a"]["ts"] == 9.0


def test_an_event_that_does_not_supersede_is_dropped(table: StateTable) -> None:
    table.apply([event("a", SUCCESS)], now=1.0)
    assert table.apply([event("a", STARTED), event("a", PENDING)], now=2.0) == []
    assert table.lookup(["a"])["a"]["state"] == SUCCESS


def test_the_first_copy_of_a_task_to_end_stands(table: StateTable) -> None:
    table.apply([event("a", SUCCESS, copy="a\x1fq1")], now=1.0)
    assert table.apply([event("a", FAILURE, retries=1, copy="a\x1fq2")], now=2.0) == []
    [again] = table.apply([event("a", STARTED, retries=1, copy="a\x1fq1")], now=3.0)
    assert again["version"] == 2


def test_forget_drops_sent_and_stored_rows(table: StateTable) -> None:
    table.apply([event("sent", SENT), event("done", SUCCESS)], now=1.0)
    table.forget(["sent", "done"])
    assert table.lookup(["sent", "done"]) == {}


def test_snapshot_of_ids_or_of_every_unfinished_task(table: StateTable) -> None:
    table.apply([event("sent", SENT), event("run", STARTED), event("done", SUCCESS)], now=1.0)
    assert {r["id"] for r in table.snapshot(None, 10)} == {"sent", "run"}
    assert {r["id"] for r in table.snapshot(["done", "nobody"], 10)} == {"done"}


def test_only_the_newest_sent_rows_are_kept(store: Store) -> None:
    table = StateTable(store, sent_kept=2)
    table.apply([event(f"t-{i}", SENT) for i in range(3)], now=1.0)
    assert table.lookup(["t-0", "t-1", "t-2"]).keys() == {"t-1", "t-2"}


def test_expire_goes_to_the_store(table: StateTable) -> None:
    table.apply([event("old", SUCCESS, ts=1.0), event("new", SUCCESS, ts=100.0)], now=1.0)
    assert table.expire(50.0) == 1
    assert table.lookup(["old", "new"]).keys() == {"new"}


def test_a_row_the_store_refuses_does_not_cost_the_others(tmp_path: Path) -> None:
    table = StateTable(SQLiteStore(tmp_path / FILENAME))
    try:
        table.apply([event("good", SUCCESS), event("bad", SUCCESS, meta={1, 2})], now=1.0)
        assert table.store.get_many(["good", "bad"]).keys() == {"good"}
    finally:
        table.close()


# -- ids that end in a counter: known absent without reading the file ----------------------

def count_selects(store: SQLiteStore) -> list[str]:
    """The SELECT statements ``store`` runs from now on (not those inside a write)."""
    selects: list[str] = []

    def note(sql: str) -> None:
        if sql.startswith("SELECT"):
            selects.append(sql)

    store._db.set_trace_callback(note)
    return selects


def test_a_sent_task_of_a_known_client_is_looked_up_without_reading_the_file(
        tmp_path: Path) -> None:
    table = StateTable(SQLiteStore(tmp_path / FILENAME))
    try:
        store = table.store
        assert isinstance(store, SQLiteStore)
        ids = [new_id() for _ in range(10)]
        selects = count_selects(store)
        table.apply([event(ids[0], SENT)], now=1.0)
        assert len(selects) == 1  # a prefix met once: read as any id
        table.apply([event(ids[1], SENT)], now=1.0)
        assert len(selects) == 2  # met again: the highest stored id with it, once
        table.apply([event(i, SENT) for i in ids[2:]], now=1.0)
        table.apply([event(ids[2], SUCCESS)], now=2.0)
        assert len(selects) == 2
        # The same task sent again after it finished: its end stands (the row is cached).
        assert table.apply([event(ids[2], SENT)], now=3.0) == []
        assert table.lookup([ids[2]])[ids[2]]["state"] == SUCCESS
        # One the store has not seen the end of is read, whatever the bound says.
        store._cache.clear()
        assert table.apply([event(ids[2], SENT)], now=3.0) == []
        assert len(selects) == 3
    finally:
        table.close()


def test_a_late_sent_never_hides_a_stored_state_after_a_restart(tmp_path: Path) -> None:
    done, running = new_id(), new_id()
    first = StateTable(SQLiteStore(tmp_path / FILENAME))
    first.apply([event(done, SUCCESS), event(running, STARTED)], now=1.0)
    first.close()
    again = StateTable(SQLiteStore(tmp_path / FILENAME))
    try:
        for _ in range(2):  # the second time, with the prefix's bound learnt
            assert again.apply([event(done, SENT), event(running, SENT)], now=2.0) == []
        assert {i: r["state"] for i, r in again.lookup([done, running]).items()} == {
            done: SUCCESS, running: STARTED}
    finally:
        again.close()


@pytest.mark.parametrize(("task_id", "parts"), [
    ("80c417f0-df7d-48cb-b259-169abce1a347", ("80c417f0-df7d-48cb-b259-", 0x169ABCE1A347)),
    ("x" * 24 + "000000000000", ("x" * 24, 0)),
    ("80c417f0-df7d-48cb-b259-169ABCE1A347", None),  # upper case
    ("80c417f0-df7d-48cb-b259-0x9abce1a347", None),
    ("80c417f0-df7d-48cb-b259-169abce_a347", None),
    ("80c417f0-df7d-48cb-b259- 69abce1a347", None),
    ("80c417f0-df7d-48cb-b259-169abce1a3470", None),
    ("given-id", None),
])
def test_which_ids_end_in_a_counter(task_id: str, parts: tuple[str, int] | None) -> None:
    assert sqlite_module._counted(task_id) == parts


def test_lookups_by_counter_answer_as_a_dict_whatever_the_order_of_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random writes, deletes, expiries and reopenings of ids under a few prefixes (and
    ids of other kinds sorting among them), mostly of counters below a horizon that grows,
    as tasks end after they are sent: every lookup finds what a dict holds."""
    monkeypatch.setattr(sqlite_module, "_CACHE_ROWS", 2)  # lookups that reach the file
    rng = random.Random(7)
    prefixes = ["a" * 23 + "-", "b" * 23 + "-", "c" * 23 + "-"]
    others = [prefixes[0] + "fffffffffff ", prefixes[1] + "zz", prefixes[2] + "0" * 11 + "g"]
    model = MemoryStore()
    store = SQLiteStore(tmp_path / FILENAME)
    try:
        for step in range(1500):
            horizon = step // 20 + (50 if rng.random() < 0.05 else 0)
            asked = [rng.choice(prefixes) + f"{rng.randint(0, step // 20 + 5):012x}"
                     for _ in range(rng.randint(1, 5))] + rng.sample(others, rng.randint(0, 1))
            action = rng.random()
            if action < 0.2:
                rows = [row(i, rng.choice([SUCCESS, STARTED]), ts=float(step)) for i in asked
                        if i in others or int(i[24:], 16) <= horizon]
                store.put_many(rows)
                model.put_many(rows)
            elif action < 0.3:
                store.delete(asked)
                model.delete(asked)
            elif action < 0.32:
                assert store.expire(step - 50.0) == model.expire(step - 50.0)
            elif action < 0.35:
                store.close()
                store = SQLiteStore(tmp_path / FILENAME)
            else:
                assert store.get_many(asked) == model.get_many(asked), step
    finally:
        store.close()
