"""``zq call --wait``: the result, and a hint when the task waits in a queue nobody takes
from (most often a task name no worker knows, sent without ``-A`` to the default queue).

The router's ``stats`` counts the tasks waiting in each queue, the actors and the tasks
they hold, but not which queues each actor consumes. So the hint is sure only when no
actor is connected; otherwise it is given when the task's queue keeps tasks while some
actor holds none (an idle actor that consumed the queue would have been handed one).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

from .errors import TimeoutError as ZqTimeoutError
from .errors import ZqError

# How often the queue is looked at while waiting, until a hint is given.
CHECK_EVERY_S = 2.0
# Looks in a row that must find the queue untaken before saying so, when actors are
# connected (an idle actor may be about to take the task); with none, the first will do.
_LOOKS_WITH_ACTORS = 2
_NO_ACTOR = "no worker is connected to the router"
_NO_CONSUMER = "no worker seems to consume it"


class Stats(Protocol):
    def stats(self, timeout_s: float | None = None) -> dict[str, Any]: ...


class Waited(Protocol):
    """What is waited for (an ``AsyncResult``)."""

    @property
    def id(self) -> str: ...

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any: ...


def untaken(stats: dict[str, Any], queue: str) -> str | None:
    """Why nothing takes from ``queue``, as far as ``stats`` tell; None when something may."""
    if not (stats.get("queued") or {}).get(queue):
        return None
    actors = int(stats.get("actors") or 0)
    if actors == 0:
        return _NO_ACTOR
    if int(stats.get("inflight") or 0) < actors:
        return _NO_CONSUMER
    return None


def wait(result: Waited, control: Stats, queue: str | None, timeout_s: float | None,
         advice: str) -> Any:
    """``result.get(propagate=False)`` within ``timeout_s``; meanwhile, once, a line on
    stderr when the task waits in ``queue`` and nothing takes from it."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    looks = 0
    while True:
        step_s = CHECK_EVERY_S if queue is not None else None
        if deadline is not None:
            remaining = max(deadline - time.monotonic(), 0.0)
            step_s = remaining if step_s is None else min(step_s, remaining)
        try:
            return result.get(timeout=step_s, propagate=False)
        except ZqTimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise ZqTimeoutError(f"task {result.id} not ready within "
                                     f"{timeout_s:g}s") from None
        if queue is None:
            continue
        try:
            why = untaken(control.stats(CHECK_EVERY_S), queue)
        except ZqError:
            why = None  # only a hint: the wait goes on
        looks = looks + 1 if why else 0
        if why == _NO_ACTOR or (why is not None and looks >= _LOOKS_WITH_ACTORS):
            then = "start `zq workers`" if why == _NO_ACTOR else advice
            print(f"zq call: task {result.id} waits in queue {queue!r}: {why} ({then})",
                  file=sys.stderr, flush=True)
            queue = None
