"""Time in the router: countdown/ETA and retry timers, expiry of queued tasks, rate limits.

Every timer Celery keeps in worker memory lives here, in the router, so that it survives a
worker's death and holds across all workers together. Nothing here reads a clock: callers
pass ``now`` (seconds since the epoch) in.
"""

from __future__ import annotations

import heapq
import itertools

from ..ratelimit import RateLimiter
from .book import QUEUED, SCHEDULED, Entry


class Schedule:
    def __init__(self) -> None:
        self.timers: list[tuple[float, int, Entry]] = []
        # Expiry times of queued tasks, by uid and attempt so that a finished task is not
        # kept alive by its expiry.
        self.expiries: list[tuple[float, str, int]] = []
        self._seq = itertools.count()
        self.limiters: dict[str, RateLimiter] = {}
        self._rates: dict[str, float | None] = {}
        # Rates set by control; they win over the rate a task's header carries.
        self.overrides: dict[str, float | None] = {}

    # -- timers -------------------------------------------------------------------------

    def at(self, when: float, entry: Entry) -> None:
        """Hold ``entry`` until ``when``."""
        entry.state = SCHEDULED
        heapq.heappush(self.timers, (when, next(self._seq), entry))

    def due(self, now: float) -> list[Entry]:
        """The scheduled entries whose time has come, in time order."""
        out = []
        while self.timers and self.timers[0][0] <= now:
            entry = heapq.heappop(self.timers)[2]
            if entry.state == SCHEDULED:
                out.append(entry)
        return out

    def scheduled_count(self) -> int:
        return sum(1 for _, _, entry in self.timers if entry.state == SCHEDULED)

    def scheduled(self) -> list[tuple[float, Entry]]:
        """The scheduled entries with their times, soonest first."""
        return sorted(((when, entry) for when, _, entry in self.timers
                       if entry.state == SCHEDULED), key=lambda item: item[0])

    # -- expiry -------------------------------------------------------------------------

    def watch_expiry(self, entry: Entry) -> None:
        if entry.expires is not None:
            heapq.heappush(self.expiries, (entry.expires, entry.uid, entry.retries))

    def expired(self, now: float) -> list[tuple[str, int]]:
        """The (uid, retries) of attempts whose expiry time has come."""
        out = []
        while self.expiries and self.expiries[0][0] <= now:
            _, uid, retries = heapq.heappop(self.expiries)
            out.append((uid, retries))
        return out

    def compact_expiries(self, live: list[Entry]) -> None:
        """Drop the expiries of finished tasks once they pile up."""
        if len(self.expiries) > 2 * len(live) + 1000:
            self.expiries = [(e.expires, e.uid, e.retries) for e in live
                             if e.expires is not None and e.state == QUEUED]
            heapq.heapify(self.expiries)

    def next_deadline(self) -> float | None:
        """When the next timer or expiry is due, or None."""
        times = [heap[0][0] for heap in (self.timers, self.expiries) if heap]
        return min(times) if times else None

    # -- rate limits --------------------------------------------------------------------

    def set_rate(self, name: str, per_second: float | None, *, override: bool = False) -> None:
        """The rate limit of task ``name``; one set by control (``override``) wins over
        the rates task headers carry."""
        if override:
            self.overrides[name] = per_second
        elif name in self.overrides:
            return
        if self._rates.get(name, -1.0) == per_second:
            return
        self._rates[name] = per_second
        if per_second is None:
            self.limiters.pop(name, None)
        else:
            self.limiters[name] = RateLimiter(per_second)

    def start_slot(self, entry: Entry, now: float) -> float | None:
        """When ``entry`` may start under its task's rate limit: None for now, else a
        later time (the entry then waits in the timers, keeping its slot)."""
        limiter = self.limiters.get(entry.name)
        if limiter is not None and not entry.rate_slot:
            slot = limiter.reserve(now)
            if slot > now:
                entry.rate_slot = True
                self.at(slot, entry)
                return slot
        entry.rate_slot = False
        return None
