"""Task rate limits, enforced by the router so they hold across every worker together.

A limit of r tasks per second spaces a task's starts 1/r seconds apart (a token bucket
holding one token, as Celery's). Each task gets its start time once, when it reaches the
front of its queue; tasks waiting for their turn sit in the router's timer heap.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


def parse_rate(rate: str | float | int | None) -> float | None:
    """Tasks per second from ``"100/s"``, ``"10/m"``, ``"1/h"`` or a number; None or 0 is none."""
    if rate is None:
        return None
    if isinstance(rate, bool):
        raise ValueError(f"invalid rate limit {rate!r}")
    if isinstance(rate, (int, float)):
        per_second = float(rate)
    else:
        match = _RATE.match(str(rate))
        if match is None:
            raise ValueError(f"invalid rate limit {rate!r}: use a number, or N/s, N/m, N/h")
        per_second = float(match.group(1)) / _UNITS[match.group(2) or "s"]
    if per_second < 0:
        raise ValueError(f"invalid rate limit {rate!r}: negative")
    return per_second or None


class RateLimiter:
    """The next free start time for one task name."""

    __slots__ = ("interval_s", "next_free")

    def __init__(self, per_second: float):
        self.interval_s = 1.0 / per_second
        self.next_free = 0.0

    def reserve(self, now: float) -> float:
        """Claim the next start slot; returns when it is (``now`` or later)."""
        slot = max(self.next_free, now)
        self.next_free = slot + self.interval_s
        return slot
