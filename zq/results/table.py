"""The latest state of every task, and the rule for which state stands."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable

from .. import states
from .store import Row, Store

logger = logging.getLogger("zq.results")

_FIELDS = ("id", "state", "retries", "name", "ts", "version", "ct", "body", "exc", "meta",
           "copy", "presumed", "runtime", "worker") + ("queue", "parent_id", "root_id",
                                                        "group_id", "chord_id")
# Kept from the row before when a later state leaves them out: where the task went and who
# its relatives are (SENT says them), as a row keeps its name.
_KEPT = ("name", "queue", "parent_id", "root_id", "group_id", "chord_id")
_SENT_KEPT = 1_000_000


def merge(old: Row | None, event: Row, now: float) -> Row | None:
    """The row that stands once ``event`` arrives on top of ``old``; None if ``old`` stays.

    Events can arrive out of order (the router forwards them in batches, clients send
    their own), so :func:`zq.states.supersedes` decides. A row keeps the task's name when
    an event leaves it out, and counts its ``version`` up by one per change.
    """
    retries = event.get("retries", 0)
    if old is not None and not states.supersedes(
            event["state"], retries, old["state"], old.get("retries", 0)) \
            and not _corrects(old, event, retries):
        return None
    if old is not None and old["state"] in states.READY_STATES and old.get("copy") \
            and event.get("copy") != old["copy"]:
        return None  # a task in several queues: the first copy to end stands
    row = {k: event[k] for k in _FIELDS if k in event}
    row.setdefault("ts", now)
    row["retries"] = retries
    if old is not None:
        for key in _KEPT:
            if key not in row and old.get(key):
                row[key] = old[key]
    row["version"] = (old.get("version", 0) if old else 0) + 1
    return row


def _corrects(old: Row, event: Row, retries: int) -> bool:
    """Whether ``event`` is the real end of an attempt the router had presumed lost (its
    host went silent, and came back with the outcome)."""
    return (bool(old.get("presumed")) and not event.get("presumed")
            and old["state"] in states.READY_STATES and event["state"] in states.READY_STATES
            and retries == old.get("retries", 0))


class StateTable:
    """Every task's latest row: SENT ones in memory, every later state in ``store``.

    SENT, the state of every accepted task, is not written: the router's journal is what
    makes an accepted task durable, and writing every task twice would halve what the
    store can take. The newest ``sent_kept`` SENT rows are kept.
    """

    def __init__(self, store: Store, sent_kept: int = _SENT_KEPT) -> None:
        self.store = store
        self._sent_kept = sent_kept
        self._sent: OrderedDict[str, Row] = OrderedDict()
        # Rows merged and not written yet (see ``take``), by id: the newest of each.
        self._unwritten: dict[str, Row] = {}
        # Whether the last write stored every row (the router is told only then).
        self.all_stored = True

    def lookup(self, ids: Iterable[str]) -> dict[str, Row]:
        """The current rows of ``ids`` that have one, by id."""
        ids = list(ids)
        found = {i: row for i in ids if (row := self._unwritten.get(i) or self._sent.get(i))}
        rest = [i for i in ids if i not in found]
        if rest:
            found.update(self.store.get_many(rest))
        return found

    def apply(self, events: list[Row], now: float) -> list[Row]:
        """Take a batch of valid events in one store transaction; return the rows that
        changed, in order (a task may change more than once in a batch)."""
        changed = self.take(events, now)
        self.write()
        return changed

    def take(self, events: list[Row], now: float) -> list[Row]:
        """Merge a batch of valid events; return the rows that changed, in order. What is
        to be stored waits for :meth:`write` (one transaction), so that the changes can
        be published and their waiters answered first."""
        current = self.lookup({e["id"] for e in events})
        changed: list[Row] = []
        durable: dict[str, Row] = {}
        for event in events:
            row = merge(current.get(event["id"]), event, now)
            if row is None:
                continue
            current[row["id"]] = row
            changed.append(row)
            if row["state"] == states.SENT:
                self._remember_sent(row)
            else:
                self._sent.pop(row["id"], None)
                durable[row["id"]] = row  # the last change of a batch is the one written
        self._unwritten.update(durable)
        return changed

    def write(self) -> None:
        """Store what :meth:`take` merged, in one transaction."""
        if self._unwritten:
            rows = list(self._unwritten.values())
            self._unwritten.clear()
            self._store(rows)

    @property
    def unwritten(self) -> int:
        """Rows merged and not stored yet."""
        return len(self._unwritten)

    def forget(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        self.store.delete(ids)
        for task_id in ids:
            self._sent.pop(task_id, None)
            self._unwritten.pop(task_id, None)

    def snapshot(self, ids: list[str] | None, limit: int) -> list[Row]:
        """The rows of ``ids``; without ids, up to ``limit`` unfinished tasks from the store
        and the newest ``limit`` SENT ones."""
        if ids:
            return list(self.lookup(ids).values())
        unready = [row for row in self._unwritten.values()
                   if row["state"] not in states.READY_STATES]
        seen = {row["id"] for row in unready}
        stored = [row for row in self.store.unready(limit) if row["id"] not in seen]
        return (unready + stored)[:limit] + list(self._sent.values())[-limit:]

    def expire(self, before_ts: float) -> int:
        """Drop the finished rows stamped before ``before_ts``; return how many."""
        return self.store.expire(before_ts)

    def close(self) -> None:
        self.store.close()

    def _store(self, rows: list[Row]) -> None:
        self.all_stored = True
        try:
            self.store.put_many(rows)
        except Exception:
            self.all_stored = False
            # Should a row the validation let through still be refused, keep the others.
            logger.exception("storing a batch of %d failed; storing one by one", len(rows))
            for row in rows:
                try:
                    self.store.put_many([row])
                except Exception as exc:
                    logger.error("dropping the state of %s: %s", row.get("id"), exc)

    def _remember_sent(self, row: Row) -> None:
        self._sent[row["id"]] = row
        if len(self._sent) > self._sent_kept:
            self._sent.popitem(last=False)
