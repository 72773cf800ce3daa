"""What the router holds back until the journal has it on disk.

With ``journal_fsync`` an answer that promises durability (ACCEPTED, a control REPLY)
waits for the fsync that covers the journal as written when it was ready, and a task
accepted is handed out only then, so that no task runs (and finishes) before the record of
its acceptance could survive a crash. Answers leave in order. Without fsync, a commit is
written before anything is answered, and nothing waits.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from ..protocol import Cmd, Message
from .book import SYNCING, Entry

# Answers that promise something is on disk.
_DURABLE_REPLIES = frozenset({Cmd.ACCEPTED, Cmd.REPLY, Cmd.CONFIRM})


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


class Durable:
    def __init__(self, journal: Log):
        self.journal = journal
        # Replies waiting for a sync: (commits written by then, to, reply).
        self.held: deque[tuple[int, bytes, Message]] = deque()
        # Accepted tasks waiting for the sync of the commit that holds them.
        self.syncing: deque[tuple[int, Entry]] = deque()

    def admit(self, entry: Entry, raw_header: bytes) -> bool:
        """Journal an accepted task; True when it may be placed at once, False when it
        waits (state SYNCING) for its commit to be synced."""
        self.journal.accepted(raw_header, entry.body)
        if not self.journal.fsync:
            return True
        entry.state = SYNCING
        self.syncing.append((self.journal.written + 1, entry))
        return False

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
