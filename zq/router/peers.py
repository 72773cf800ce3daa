"""What the router knows of each actor process and each worker host."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .book import Entry


@dataclass
class ActorState:
    identity: bytes
    host: str
    pid: int
    queues: tuple[str, ...]
    credit: int
    supervised: bool
    registered_at: float
    # What it holds, in the order handed out: the first is running, the rest prefetched.
    inflight: OrderedDict[tuple[str, int], Entry] = field(default_factory=OrderedDict)
    # Set when its supervisor saw it exit cleanly: no more tasks; its BYE settles it.
    departed_at: float | None = None
    # Known only from its supervisor's heartbeat (busy across a router restart): it is
    # asked to announce itself once its task is done.
    placeholder: bool = False
    # Where the next turn over its queues starts, so that each gets served in rotation.
    turn: int = 0
    # When the router last heard from it (any message).
    last_seen: float = 0.0
    # How many tasks it may hold at once (its prefetch), as its last READY said.
    window: int = 0
    # The task names it has (its READY says); None: not said, it is given any task.
    tasks: frozenset[str] | None = None
    # Held tasks it may start before the router confirmed the DONEs before them (see
    # zq.router.pace): a lost actor may have started any of them.
    granted: set[tuple[str, int]] = field(default_factory=set)
    # How many tasks it may hold, as worked out from what it holds (0: not worked out
    # yet), and from which figures of the router's Pace (see Dispatch.limit).
    depth: int = 0
    depth_version: int = -1
    # Its app's task names, as its READY said (for inspect registered).
    registered: tuple[str, ...] = ()

    def release(self, key: tuple[str, int]) -> Entry | None:
        """No longer held: finished, handed back, or placed elsewhere."""
        self.granted.discard(key)
        entry = self.inflight.pop(key, None)
        if not self.inflight:
            self.depth = 0  # what it held no longer bounds it
        return entry

    def runs(self, name: str) -> bool:
        """Whether it has the task ``name``."""
        return self.tasks is None or name in self.tasks

    @property
    def taking(self) -> bool:
        """Whether it may be given tasks at all (not leaving, not just a placeholder)."""
        return self.departed_at is None and not self.placeholder

    @property
    def name(self) -> str:
        return self.identity.decode(errors="replace")


@dataclass
class HostState:
    host: str
    identity: bytes
    last_seen: float
    # What its supervisor's last heartbeat said of the host and its actors (pid, uptime,
    # pool size, prefetch, settings, tasks processed, resource use): what inspect shows.
    pool: dict[str, Any] = field(default_factory=dict)
