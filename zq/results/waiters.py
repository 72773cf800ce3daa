"""Clients blocked in WAIT: who waits for which task, and until when."""

from __future__ import annotations

_MAX_WAITERS = 1_000_000


class Waiters:
    """The peers waiting for each task to finish, each until its deadline.

    A peer whose deadline passes is dropped without an answer: its own timeout has
    ended the wait on its side. Deadlines are swept by :meth:`expire`; until then an
    answered wait still counts towards ``limit``, which bounds the memory strangers can
    make us spend.
    """

    def __init__(self, limit: int = _MAX_WAITERS) -> None:
        self._limit = limit
        self._by_task: dict[str, set[bytes]] = {}
        self._deadlines: list[tuple[float, str, bytes]] = []

    def add(self, task_id: str, peer: bytes, deadline: float) -> bool:
        """Let ``peer`` wait for ``task_id`` until ``deadline``; False when full."""
        if len(self._deadlines) >= self._limit:
            return False
        self._by_task.setdefault(task_id, set()).add(peer)
        self._deadlines.append((deadline, task_id, peer))
        return True

    def pop(self, task_id: str) -> set[bytes]:
        """The peers waiting for ``task_id``, which has just finished; they wait no more."""
        return self._by_task.pop(task_id, set())

    def expire(self, now: float) -> None:
        """Drop the waits whose deadline is past."""
        live = [(d, i, p) for d, i, p in self._deadlines if d > now]
        if len(live) == len(self._deadlines):
            return
        self._deadlines = live
        by_task: dict[str, set[bytes]] = {}
        for _, task_id, peer in live:
            if peer in self._by_task.get(task_id, ()):
                by_task.setdefault(task_id, set()).add(peer)
        self._by_task = by_task
