"""Accepted tasks as the router holds them, and the queues they wait in."""

from __future__ import annotations

from collections import deque
from typing import Any

QUEUED, SCHEDULED, INFLIGHT, DEAD = "queued", "scheduled", "inflight", "dead"
# Accepted, written to the journal, and waiting for the fsync that makes it durable
# (``journal_fsync``): not handed out before then.
SYNCING = "syncing"


class Entry:
    """One accepted task as the router holds it: its header, its opaque body, its place.

    ``uid`` is what the router, the journal and the actors track it by: the task id, or for
    one of the copies an exchange routed to several queues, ``copy_id`` (id and queue).
    """

    __slots__ = ("id", "uid", "name", "header", "raw_header", "body", "queue", "priority", "eta",
                 "expires", "retries", "state", "redeliveries", "accepted_at", "rate_slot")

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
    """A named queue with ten priority levels; 0 is served first, FIFO within a level."""

    __slots__ = ("name", "levels", "size")

    def __init__(self, name: str):
        self.name = name
        self.levels: list[deque[Entry]] = [deque() for _ in range(10)]
        self.size = 0

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
            self.size -= 1
        entry.state = DEAD

    def drain(self) -> list[Entry]:
        entries = [e for level in self.levels for e in level if e.state == QUEUED]
        for level in self.levels:
            level.clear()
        self.size = 0
        return entries
