"""How long each task runs, and so how many tasks an actor may hold at once.

An actor holds as many tasks as its prefetch allows (1 by default: Celery's ``-Ofair``).
Behind a task known to be short the router stacks more, as many as fit in a small budget
of expected work, so that an actor running short tasks always has the next one at hand and
gets them many to a message. A task of a name not seen yet, or one that ran long, counts
as long: nothing is stacked behind it, so it never holds back a task that an idle actor
could run. Stacked tasks are *granted*: the actor may start one before the router has
confirmed the DONEs before it (see :mod:`zq.worker.actor`), and a lost actor's granted
tasks are judged as possibly started (see :meth:`Core.actor_lost`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# A task counts as short while its name's expected runtime is at most this.
SHORT_S = 0.01
# Expected work stacked on one actor: the depth of its window is this over the runtime of
# the slowest task it holds.
BUDGET_S = 0.02
MAX_DEPTH = 32
# Runtimes kept for this many task names at most (the oldest seen is forgotten first).
MAX_NAMES = 10_000
# How fast a shorter runtime pulls the estimate down; a longer one raises it at once.
_DECAY = 0.3


class Pace:
    def __init__(self) -> None:
        self._expected: dict[str, float] = {}
        # Counts up whenever a name's depth shrinks: what was worked out from the old
        # figures is worked out again (see Dispatch).
        self.version = 0

    def observe(self, name: Any, runtime: Any) -> None:
        """A task of ``name`` ran for ``runtime`` seconds (as its actor reports; anything
        that is not a plausible duration is ignored)."""
        if not isinstance(name, str) or isinstance(runtime, bool) \
                or not isinstance(runtime, (int, float)) \
                or not math.isfinite(runtime) or runtime < 0:
            return
        depth = self.depth_of(name)
        before = self._expected.pop(name, None)
        if before is None or runtime >= before:
            expected = float(runtime)
        else:
            expected = before + _DECAY * (runtime - before)
        self._expected[name] = expected
        if len(self._expected) > MAX_NAMES:
            del self._expected[next(iter(self._expected))]
        if self.depth_of(name) < depth:
            self.version += 1

    def expected(self, name: str) -> float | None:
        return self._expected.get(name)

    def short(self, name: str) -> bool:
        expected = self._expected.get(name)
        return expected is not None and expected <= SHORT_S

    def depth_of(self, name: str) -> int:
        """How many tasks of ``name`` an actor may hold: the budget over its expected
        runtime, between 2 and MAX_DEPTH; 1 when it is not known to be short."""
        expected = self._expected.get(name)
        if expected is None or expected > SHORT_S:
            return 1
        if expected * MAX_DEPTH <= BUDGET_S:  # no division: a runtime may be tiny
            return MAX_DEPTH
        return max(2, int(BUDGET_S / expected))

    def depth(self, names: Iterable[str]) -> int:
        """How many tasks an actor may hold when it holds these: the least of their
        depths (1 when one of them is not short)."""
        return min((self.depth_of(name) for name in names), default=MAX_DEPTH)
