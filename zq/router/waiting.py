"""Clients waiting in ``get()`` for a task the router holds: the short way for results.

A client sends WAIT on its router socket, right behind the task it sent (so the router
holds the task by then). For each task it holds, the router notes the client and sends it
the task's final state the moment it ends, in the step that journals the end; the results
actor stores it as before. A task that ended recently (its final event still kept until
the results actor says it is stored) is answered at once from there. Of the other ids
(finished long ago, or never seen) it answers ``elsewhere``: the client asks the results
actor for those. A client
also asks the results actor for what it is still waiting on after a while, so that
neither a router restart (which forgets the waiters) nor a journal that cannot be
written (no result leaves the router then) leaves a ``get()`` hanging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import states
from ..protocol import MAX_TASK_ID, Cmd, Message

# Ids in one WAIT at most, clients noted per task, and tasks with waiters: past these a
# WAIT is answered ``elsewhere`` (the results actor waits for it instead).
MAX_IDS = 10_000
MAX_PER_TASK = 8
MAX_TASKS = 200_000
# The fields of a final event that a client reads (those the results actor keeps).
_FIELDS = ("id", "state", "retries", "name", "ts", "ct", "body", "exc", "meta", "copy",
           "presumed")


class Waiters:
    def __init__(self) -> None:
        self._by_task: dict[str, list[bytes]] = {}
        # What leaves at the next answer, per client: final states.
        self.pushes: dict[bytes, list[dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._by_task)

    def add(self, task_id: str, identity: bytes) -> bool:
        """Note ``identity`` as waiting for ``task_id``; False when there is no room."""
        waiting = self._by_task.get(task_id)
        if waiting is None:
            if len(self._by_task) >= MAX_TASKS:
                return False
            self._by_task[task_id] = [identity]
            return True
        if identity in waiting:
            return True
        if len(waiting) >= MAX_PER_TASK:
            return False
        waiting.append(identity)
        return True

    def push(self, identity: bytes, event: dict[str, Any]) -> None:
        """Send ``identity`` this final event with the next answers."""
        self.pushes.setdefault(identity, []).append(
            {key: event[key] for key in _FIELDS if key in event})

    def ended(self, event: dict[str, Any]) -> None:
        """A task ended with ``event``: its waiters get it with the next answers."""
        if not self._by_task or event.get("state") not in states.READY_STATES:
            return
        waiting = self._by_task.pop(event.get("id"), None)  # type: ignore[arg-type]
        if waiting:
            row = {key: event[key] for key in _FIELDS if key in event}
            for identity in waiting:
                self.pushes.setdefault(identity, []).append(row)

    def take_pushes(self) -> list[tuple[bytes, Message]]:
        pushes, self.pushes = self.pushes, {}
        return [(identity, Message(Cmd.STATES, {"states": rows}))
                for identity, rows in pushes.items()]

    def forget(self, held: Callable[[str], bool]) -> None:
        """Drop the waiters of tasks no longer held (ended without an event, or purged)."""
        for task_id in [t for t in self._by_task if not held(t)]:
            del self._by_task[task_id]


def wait_problem(ids: Any) -> str | None:
    if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= MAX_TASK_ID
                                            for i in ids):
        return "WAIT needs 'ids': a list of task ids"
    if len(ids) > MAX_IDS:
        return f"WAIT takes at most {MAX_IDS} ids"
    return None
