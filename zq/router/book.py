"""Accepted tasks as the router holds them: the task table, the queues they wait in, and
what the router remembers of finished and revoked tasks."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

QUEUED, SCHEDULED, INFLIGHT, DEAD = "queued", "scheduled", "inflight", "dead"
# Accepted, written to the journal, and waiting for the fsync that makes it durable
# (``journal_fsync``): not handed out before then.
SYNCING = "syncing"
# A chord body held until its parts have ended (see zq.router.chords), or a task that
# replaced itself, held until its replacement ends: in no queue, never handed out.
WAITING = "waiting"


class Entry:
    """One accepted task as the router holds it: its header, its opaque body, its place.

    ``uid`` is what the router, the journal and the actors track it by: the task id, or for
    one of the copies an exchange routed to several queues, ``copy_id`` (id and queue).
    """

    __slots__ = ("id", "uid", "name", "header", "raw_header", "body", "queue", "priority", "eta",
                 "expires", "retries", "state", "redeliveries", "accepted_at", "rate_slot",
                 "parked")

    def __init__(self, header: dict[str, Any], raw_header: bytes | None, body: bytes):
        self.id: str = header["id"]
        self.uid: str = header.get("copy_id") or self.id
        self.name: str = header["task"]
        self.header = header
        self.raw_header = raw_header
        self.body = body
        self.queue: str = header.get("queue") or ""
        self.priority: int = header.get("priority") or 0
        self.eta: float | None = header.get("eta")
        self.expires: float | None = header.get("expires")
        self.retries: int = header.get("retries", 0)
        self.redeliveries: int = header.get("redeliveries", 0)
        self.state = QUEUED
        self.accepted_at = 0.0
        # Holds a start slot under its task's rate limit already (see zq.ratelimit).
        self.rate_slot = False
        # Set aside in its queue: no connected actor of the queue has its task.
        self.parked = False

    @property
    def key(self) -> tuple[str, int]:
        return self.uid, self.retries

    @property
    def acks_late(self) -> bool:
        return bool(self.header.get("acks_late"))

    def set_header(self, **changes: Any) -> None:
        """Change the header that is sent on (the raw copy no longer matches it)."""
        self.header.update(changes)
        self.raw_header = None


class TaskQueue:
    """A named queue with ten priority levels; 0 is served first, FIFO within a level.

    A task that no connected actor of the queue can run (none has its task name) is
    *parked*: set aside by name, out of the way of the others, until an actor that has it
    announces itself. ``size`` counts what may be handed out; ``parked_count`` the rest."""

    __slots__ = ("name", "levels", "size", "parked")

    def __init__(self, name: str):
        self.name = name
        self.levels: list[deque[Entry]] = [deque() for _ in range(10)]
        self.size = 0
        self.parked: dict[str, deque[Entry]] = {}

    @property
    def parked_count(self) -> int:
        return sum(len(entries) for entries in self.parked.values())

    def park(self, entry: Entry) -> None:
        """Set aside an entry just popped: none of the queue's actors has its task."""
        entry.parked = True
        self.parked.setdefault(entry.name, deque()).append(entry)

    def unpark(self, runs: Callable[[str], bool]) -> int:
        """Put back, at the front and in their order, the parked tasks whose name ``runs``
        says an actor has now; returns how many."""
        count = 0
        for name in [n for n in self.parked if runs(n)]:
            entries = self.parked.pop(name)
            for entry in reversed(entries):
                entry.parked = False
                self.push(entry, front=True)
            count += len(entries)
        return count

    def push(self, entry: Entry, front: bool = False) -> None:
        level = self.levels[min(max(entry.priority, 0), 9)]
        if front:
            level.appendleft(entry)
        else:
            level.append(entry)
        entry.state = QUEUED
        entry.queue = self.name
        self.size += 1

    def pop(self) -> Entry | None:
        """The next live entry; entries marked dead while queued are skipped."""
        if self.size <= 0:
            return None
        for level in self.levels:
            while level:
                entry = level.popleft()
                if entry.state == QUEUED:
                    self.size -= 1
                    return entry
        self.size = 0
        return None

    def discard(self, entry: Entry) -> None:
        """Mark a queued entry dead; it is dropped when it reaches the front."""
        if entry.state == QUEUED:
            if entry.parked:
                entry.parked = False
                self.parked[entry.name].remove(entry)
                if not self.parked[entry.name]:
                    del self.parked[entry.name]
            else:
                self.size -= 1
        entry.state = DEAD

    def drain(self) -> list[Entry]:
        entries = [e for level in self.levels for e in level if e.state == QUEUED]
        entries += [e for parked in self.parked.values() for e in parked]
        for level in self.levels:
            level.clear()
        for entry in entries:
            entry.parked = False
        self.parked.clear()
        self.size = 0
        return entries


def attempt(uid: str, retries: int) -> str | tuple[str, int]:
    """One attempt of a task as a key: a first attempt by its uid alone (no tuple)."""
    return uid if retries == 0 else (uid, retries)


class RecentKeys:
    """The most recent keys, kept in generations of plain sets: the newest takes keys,
    and when it is full the oldest of ``generations`` is dropped whole. Between
    ``generations - 1`` and ``generations`` times ``size`` keys are remembered, and no
    ever-churning table is rebuilt (an insertion-ordered dict popping its oldest key
    reallocates its table every so often, and the allocator keeps the old copies)."""

    def __init__(self, size: int, generations: int = 3):
        self.size = size
        self.generations: deque[set[Any]] = deque([set()], maxlen=generations)

    def add(self, key: Any) -> None:
        newest = self.generations[-1]
        newest.add(key)
        if len(newest) >= self.size:
            self.generations.append(set())

    def __contains__(self, key: Any) -> bool:
        for generation in self.generations:  # a loop: no generator made per lookup
            if key in generation:
                return True
        return False

    def __len__(self) -> int:
        return sum(len(generation) for generation in self.generations)

    def discard(self, key: Any) -> None:
        for generation in self.generations:
            generation.discard(key)


class Records(Protocol):
    """What the task table writes down (the journal, or a stand-in in tests)."""

    def finished(self, task_id: str, retries: int, event: Any = None) -> int | None: ...

    def revoked(self, task_id: str) -> None: ...

    def stored(self, upto: int) -> None: ...


class Book:
    """Accepted, unfinished tasks by uid; the uids of a fanout task's copies by its id;
    recent finished attempts (so a resend or a late DONE is recognised); revoked ids."""

    def __init__(self, records: Records, *, finished_generation: int = 50_000,
                 revoked_kept: int = 50_000):
        self.records = records
        self.tasks: dict[str, Entry] = {}
        self.copies: dict[str, set[str]] = {}
        self.finished = RecentKeys(finished_generation)
        self.revoked: OrderedDict[str, None] = OrderedDict()
        self.revoked_kept = revoked_kept

    def track(self, entry: Entry) -> None:
        self.tasks[entry.uid] = entry
        if entry.uid != entry.id:
            self.copies.setdefault(entry.id, set()).add(entry.uid)

    def retire(self, entry: Entry, event: dict[str, Any] | None = None) -> int | None:
        """The entry is done with (finished, failed, revoked, expired, purged); its final
        state event, when given, is recorded with it. Returns the event's sequence."""
        entry.state = DEAD
        if self.tasks.get(entry.uid) is entry:
            del self.tasks[entry.uid]
            if entry.uid != entry.id:
                copies = self.copies.get(entry.id)
                if copies is not None:
                    copies.discard(entry.uid)
                    if not copies:
                        del self.copies[entry.id]
        seq = self.records.finished(entry.uid, entry.retries, event)
        self.remember_finished(entry.key)
        return seq

    def ended_unadmitted(self, entry: Entry, event: dict[str, Any]) -> int | None:
        """A task that ended as it came in (no route, revoked already): remembered as
        finished, its final event recorded."""
        self.remember_finished(entry.key)
        return self.records.finished(entry.uid, entry.retries, event)

    def untrack(self, entry: Entry) -> None:
        """Forget an entry that was never accepted after all (its journal record could not
        be written): no record of it ending, and a resend of it is taken anew."""
        entry.state = DEAD
        if self.tasks.get(entry.uid) is entry:
            del self.tasks[entry.uid]
            copies = self.copies.get(entry.id)
            if copies is not None:
                copies.discard(entry.uid)
                if not copies:
                    del self.copies[entry.id]
        # Ended in the same step (expired, purged), or the task routed to several queues
        # that its copies are: remembered as finished, so a resend would be ignored.
        self.finished.discard(attempt(entry.uid, entry.retries))
        self.finished.discard(attempt(entry.id, entry.retries))

    def remember_finished(self, key: tuple[str, int]) -> None:
        self.finished.add(attempt(*key))

    def finished_attempts(self) -> list[tuple[str, int]]:
        """The finished attempts remembered, as (uid, retries): what a journal rewrite
        keeps so that a restart still recognises a resend of one."""
        return [key if isinstance(key, tuple) else (key, 0)
                for generation in self.finished.generations for key in generation]

    def known(self, uid: str, retries: int) -> bool:
        """Whether this attempt of the task was accepted already (a resend)."""
        entry = self.tasks.get(uid)
        return (entry is not None and entry.retries >= retries) \
            or attempt(uid, retries) in self.finished

    def entries(self, task_id: str) -> list[Entry]:
        """The accepted, unfinished entries of a task: itself, or each of its copies."""
        uids = [task_id, *self.copies.get(task_id, ())]
        return [entry for uid in uids if (entry := self.tasks.get(uid)) is not None]

    def revoke(self, task_id: str, *, record: bool = True) -> None:
        """Remember ``task_id`` as revoked (bounded: the oldest are forgotten)."""
        self.revoked[task_id] = None
        self.revoked.move_to_end(task_id)
        if len(self.revoked) > self.revoked_kept:
            self.revoked.popitem(last=False)
        if record:
            self.records.revoked(task_id)
