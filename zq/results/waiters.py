"""Clients blocked in WAIT: who waits for which task, and until when."""

from __future__ import annotations

import heapq
import math

# About 500 bytes a wait with its id (measured; see docs/guarantees.md), so at most
# ~50 MB: room for ten clients each holding the most one peer may, at once.
_MAX_WAITS = 100_000
# One WAIT names at most 10,000 ids, so a client can always have one whole WAIT held;
# the client itself keeps to half of this (see zq.client).
_MAX_WAITS_PER_PEER = 10_000


class Waiters:
    """The peers waiting for each task to finish, each until its deadline.

    A wait is one (task, peer) pair: asking again moves its deadline, it does not add a
    second wait. A finished task's waits are removed from every structure at once
    (:meth:`pop`); a wait whose deadline passes is dropped without an answer by
    :meth:`expire` (the client renews its waits well before they end). Deadlines sit in
    one-second buckets, so a sweep costs only the waits that end in it.

    ``limit`` bounds the waits held for everybody and ``per_peer`` those of one peer:
    together they bound the memory strangers can make us spend.
    """

    def __init__(self, limit: int = _MAX_WAITS, per_peer: int = _MAX_WAITS_PER_PEER) -> None:
        self.limit = limit
        self.per_peer = per_peer
        self._by_task: dict[str, dict[bytes, int]] = {}  # task -> peer -> its bucket
        self._per_peer: dict[bytes, int] = {}
        self._buckets: dict[int, set[tuple[str, bytes]]] = {}
        self._seconds: list[int] = []  # the buckets' keys, a heap
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def held_by(self, peer: bytes) -> int:
        """How many waits ``peer`` holds."""
        return self._per_peer.get(peer, 0)

    def add(self, task_id: str, peer: bytes, deadline: float) -> bool:
        """Let ``peer`` wait for ``task_id`` until ``deadline``, or renew its wait; False
        when that peer, or everybody, holds as many waits as allowed."""
        waiting = self._by_task.get(task_id)
        if waiting is not None and peer in waiting:
            self._unfile(task_id, peer, waiting[peer])
        elif self._count >= self.limit or self._per_peer.get(peer, 0) >= self.per_peer:
            return False
        else:
            if waiting is None:
                waiting = self._by_task[task_id] = {}
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
            self._count += 1
        # A wait ends in the first sweep at or after the second that follows its
        # deadline: never early, at most a second late.
        second = math.floor(deadline) + 1
        waiting[peer] = second
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = set()
            heapq.heappush(self._seconds, second)
        bucket.add((task_id, peer))
        return True

    def pop(self, task_id: str) -> set[bytes]:
        """The peers waiting for ``task_id``, which has just finished; they wait no more."""
        waiting = self._by_task.pop(task_id, None)
        if not waiting:
            return set()
        for peer, second in waiting.items():
            self._unfile(task_id, peer, second)
            self._release(peer)
        return set(waiting)

    def expire(self, now: float) -> int:
        """Drop the waits whose deadline is past; return how many."""
        dropped = 0
        while self._seconds and self._seconds[0] <= now:
            for task_id, peer in self._buckets.pop(heapq.heappop(self._seconds), ()):
                waiting = self._by_task[task_id]
                del waiting[peer]
                if not waiting:
                    del self._by_task[task_id]
                self._release(peer)
                dropped += 1
        return dropped

    def _unfile(self, task_id: str, peer: bytes, second: int) -> None:
        # An emptied bucket stays until its second passes, so that each second's key
        # enters the heap once however often its bucket empties and fills.
        self._buckets[second].discard((task_id, peer))

    def _release(self, peer: bytes) -> None:
        self._count -= 1
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]
