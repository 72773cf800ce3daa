"""What a results store is: the shape both stores take, and the rules they share.

A row is a task's latest state as the results actor keeps it: the event's fields
(``id``, ``state``, ``retries``, ``name``, ``ts``, ``ct``, ``body``, ``exc``, ``meta``,
``copy``) plus the ``version`` the actor gave it. A store keeps rows by task id and
never looks inside them beyond ``id``, ``state`` and ``ts``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from .. import states

Row = dict[str, Any]


class Store(Protocol):
    """Where the results actor keeps every state after SENT."""

    def get_many(self, ids: Iterable[str]) -> dict[str, Row]:
        """The stored rows of ``ids``, by id; an id never stored is absent."""
        ...

    def put_many(self, rows: list[Row]) -> None:
        """Store ``rows`` together, each replacing the row of its id."""
        ...

    def delete(self, ids: Iterable[str]) -> None:
        """Forget ``ids``; an id not stored is ignored."""
        ...

    def expire(self, before_ts: float) -> int:
        """Delete the finished rows stamped before ``before_ts``; return how many."""
        ...

    def unready(self, limit: int) -> list[Row]:
        """At most ``limit`` rows of tasks that have not finished."""
        ...

    def close(self) -> None:
        ...


def is_ready(row: Row) -> bool:
    """Whether the row is a finished task's (SUCCESS, FAILURE, REVOKED)."""
    return row["state"] in states.READY_STATES


def is_expired(row: Row, before_ts: float) -> bool:
    """Whether ``expire(before_ts)`` removes the row: finished and stamped before then."""
    return is_ready(row) and row.get("ts", 0) < before_ts
