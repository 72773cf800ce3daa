"""What the router holds back until the journal has it on disk.

With ``journal_fsync`` an answer that promises durability (ACCEPTED, a control REPLY)
waits for the fsync that covers the journal as written when it was ready, and a task
accepted is handed out only then, so that no task runs (and finishes) before the record of
its acceptance could survive a crash. Answers leave in order. Without fsync, a commit is
written before anything is answered, and nothing waits.

A commit that cannot be written (a full or read-only disk) takes the tasks admitted since
the last one with it: :meth:`Durable.committed` hands them back to be refused, and new
tasks are refused at once (:meth:`Durable.refusal`) until a retry of the write succeeds.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from ..protocol import Cmd, Message
from .book import SYNCING, Entry

# Answers that promise something is on disk (a task's result pushed to a client waiting
# for it: its end is).
_DURABLE_REPLIES = frozenset({Cmd.ACCEPTED, Cmd.REPLY, Cmd.CONFIRM, Cmd.STATES})
# While the journal cannot be written, tasks are refused at once; this often the next
# tasks are let through to try a write again.
JOURNAL_RETRY_S = 1.0


class Log(Protocol):
    """The journal as the router uses it (see zq.router.journal.Journal)."""

    fsync: bool
    written: int

    @property
    def synced(self) -> int: ...

    def accepted(self, raw_header: bytes, body: bytes) -> None: ...

    def finished(self, task_id: str, retries: int, event: Any = None) -> int | None: ...

    def stored(self, upto: int) -> None: ...

    def revoked(self, task_id: str) -> None: ...

    def part(self, body_id: str, index: int, event: Any) -> None: ...

    def updated(self, raw_header: bytes, body: bytes) -> None: ...


class Durable:
    def __init__(self, journal: Log):
        self.journal = journal
        # Replies waiting for a sync: (commits written by then, to, reply).
        self.held: deque[tuple[int, bytes, Message]] = deque()
        # Accepted tasks waiting for the sync of the commit that holds them.
        self.syncing: deque[tuple[int, Entry]] = deque()
        # Tasks admitted since the last commit: refused if it cannot be written.
        self.unwritten: list[Entry] = []
        # Why the journal cannot be written ("journal <path>: <reason>"), or None; and
        # when the next tasks may try it again.
        self.failure: str | None = None
        self.retry_at = 0.0

    def admit(self, entry: Entry, raw_header: bytes) -> bool:
        """Journal an accepted task; True when it may be placed at once, False when it
        waits (state SYNCING) for its commit to be synced."""
        self.journal.accepted(raw_header, entry.body)
        self.unwritten.append(entry)
        if not self.journal.fsync:
            return True
        entry.state = SYNCING
        self.syncing.append((self.journal.written + 1, entry))
        return False

    def refusal(self, now: float) -> str | None:
        """Why a new task is refused at once, or None: the journal takes tasks (or a retry
        of its write is due)."""
        if self.failure is not None and now < self.retry_at:
            return self.failure
        return None

    def due(self, now: float) -> bool:
        """Whether the loop should commit now: always, except while the journal fails and
        no retry is due (the records that are not acceptances wait meanwhile)."""
        return self.failure is None or now >= self.retry_at or bool(self.unwritten)

    def committed(self, written: bool, failure: str | None, now: float) -> list[Entry]:
        """After a commit: ``written`` when everything journaled is in the file, else
        ``failure`` says why. Returns the tasks admitted since the last commit that are
        not written (and never will be): the caller refuses them."""
        self.failure = failure
        unwritten, self.unwritten = self.unwritten, []
        if written:
            return []
        self.retry_at = now + JOURNAL_RETRY_S
        if self.syncing:
            gone = {id(entry) for entry in unwritten}
            self.syncing = deque(item for item in self.syncing if id(item[1]) not in gone)
        return unwritten

    def outgoing(self, replies: list[tuple[bytes, Message]]) -> list[tuple[bytes, Message]]:
        """Of this step's replies and those held before, what may leave now, in order."""
        written = self.journal.written
        synced = self.journal.synced
        out = []
        for identity, msg in replies:
            if (written > synced or self.held) and msg.cmd in _DURABLE_REPLIES:
                self.held.append((written, identity, msg))
            else:
                out.append((identity, msg))
        while self.held and self.held[0][0] <= synced:
            _, identity, msg = self.held.popleft()
            out.append((identity, msg))
        return out

    def synced_entries(self) -> list[Entry]:
        """Accepted tasks whose commit is on disk now: they may be placed."""
        synced = self.journal.synced
        out = []
        while self.syncing and self.syncing[0][0] <= synced:
            entry = self.syncing.popleft()[1]
            if entry.state == SYNCING:
                out.append(entry)
        return out
