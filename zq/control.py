"""``app.control``: requests to the router about running work (docs/operations.md).

Celery broadcasts these to its workers and gathers their replies; zq sends each to the
router, which answers inspect from what it knows and forwards control to the actors and
supervisors concerned. Answers are keyed by worker name as Celery's are: an actor's
identity (``host/index/generation``), a host's name for what a host does (``conf``,
``shutdown``, the pool), ``router`` for what the router holds itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .config import Settings
from .protocol import Cmd


class RouterCaller(Protocol):
    """What sends a request to the router and returns its answer (``RouterClient``)."""

    def call(self, cmd: Cmd, header: dict[str, Any], timeout_s: float) -> dict[str, Any]: ...


class ControlledApp(Protocol):
    """What ``Control`` needs of an App: its settings and its thread's router client."""

    @property
    def settings(self) -> Settings: ...

    def router_client(self) -> RouterCaller: ...


class Control:
    """Requests about running work, sent to the router (Celery sends them to workers)."""

    def __init__(self, app: ControlledApp):
        self.app = app

    def _call(self, op: str, timeout_s: float | None = None, **fields: Any) -> dict[str, Any]:
        timeout_s = timeout_s if timeout_s is not None else self.app.settings.publish_timeout_s
        return self.app.router_client().call(Cmd.CONTROL, {"op": op, **fields}, timeout_s)

    def stats(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The router's view: connected actors and hosts, queue lengths, tasks in flight."""
        return self._call("stats", timeout_s)

    def inspect(self, destination: Sequence[str] | str | None = None,
                timeout: float = 1.0) -> Inspect:
        """Celery's ``app.control.inspect()``: questions about the workers' work."""
        return Inspect(self, destination, timeout)

    def purge(self, queue: str | None = None) -> int:
        """Drop the tasks waiting in ``queue`` (every queue when None); returns how many."""
        return int(self._call("purge", queue=queue)["purged"])

    def revoke(self, task_id: str | Sequence[str], terminate: bool = False,
               signal: str = "SIGTERM", **options: Any) -> None:
        """Revoke tasks: a waiting one never runs; with ``terminate`` a running one is killed.
        The router holds the revoked ids for every worker (``destination`` is not needed)."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self._call("revoke", ids=ids, terminate=terminate, signal=signal)

    def terminate(self, task_id: str | Sequence[str], signal: str = "SIGTERM",
                  **options: Any) -> None:
        """Revoke tasks and kill the process running any of them."""
        self.revoke(task_id, terminate=True, signal=signal)

    def rate_limit(self, task_name: str, rate_limit: str | float | None,
                   **options: Any) -> None:
        """Change a task's rate limit across all workers (the router enforces it)."""
        self._call("rate_limit", task=task_name, rate_limit=rate_limit)

    def time_limit(self, task_name: str, soft: float | None = None,
                   hard: float | None = None, destination: Destination = None,
                   **options: Any) -> Replies:
        """A task's soft and hard time limits, for the tasks the actors start from now on
        (both None: back to the task's own)."""
        return self._broadcast("time_limit", destination, task=task_name, soft=soft,
                               hard=hard)

    def add_consumer(self, queue: str, destination: Destination = None,
                     **options: Any) -> Replies:
        """The actors start taking tasks from ``queue`` too."""
        return self._broadcast("add_consumer", destination, queue=queue)

    def cancel_consumer(self, queue: str, destination: Destination = None,
                        **options: Any) -> Replies:
        """The actors stop taking tasks from ``queue`` (what they hold already runs)."""
        return self._broadcast("cancel_consumer", destination, queue=queue)

    def shutdown(self, destination: Destination = None, **options: Any) -> Replies:
        """A warm shutdown of the hosts (every host when ``destination`` is None)."""
        return self._broadcast("shutdown", destination)

    def pool_grow(self, n: int = 1, destination: Destination = None,
                  **options: Any) -> Replies:
        return self._broadcast("pool_grow", destination, n=n)

    def pool_shrink(self, n: int = 1, destination: Destination = None,
                    **options: Any) -> Replies:
        """Stop ``n`` actors of each host warm, idle ones first."""
        return self._broadcast("pool_shrink", destination, n=n)

    def autoscale(self, max: int, min: int, destination: Destination = None,  # noqa: A002
                  **options: Any) -> Replies:
        """Keep each host between ``min`` and ``max`` actors, growing while all are busy."""
        return self._broadcast("autoscale", destination, max=max, min=min)

    def ping(self, destination: Destination = None, timeout: float = 1.0,
             **options: Any) -> Replies:
        answer = self.inspect(destination, timeout).ping() or {}
        return [{name: reply} for name, reply in answer.items()]

    def _broadcast(self, op: str, destination: Destination, **fields: Any) -> Replies:
        """A request the router forwards; Celery's list of ``{worker: {"ok": ...}}``."""
        reply = self._call(op, destination=_names(destination), **fields)
        return [{name: answer} for name, answer in reply.get("replies", {}).items()]


class Inspect:
    """Celery's ``Inspect``: each method answers ``{worker name: answer}``, or None when
    no worker is selected (as Celery's does when none replies)."""

    def __init__(self, control: Control, destination: Destination, timeout: float):
        self.control = control
        self.destination = _names(destination)
        self.timeout = timeout

    def _ask(self, method: str, **fields: Any) -> dict[str, Any] | None:
        reply = self.control._call("inspect", self.timeout, method=method,
                                   destination=self.destination, **fields)
        answer: dict[str, Any] = reply.get("answer") or {}
        return answer or None

    def active(self) -> dict[str, Any] | None:
        return self._ask("active")

    def reserved(self) -> dict[str, Any] | None:
        return self._ask("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        """Tasks waiting for their ETA or countdown (held by the router: ``router``)."""
        return self._ask("scheduled")

    def revoked(self) -> dict[str, Any] | None:
        return self._ask("revoked")

    def registered(self) -> dict[str, Any] | None:
        return self._ask("registered")

    registered_tasks = registered

    def ping(self) -> dict[str, Any] | None:
        return self._ask("ping")

    def stats(self) -> dict[str, Any] | None:
        return self._ask("stats")

    def query_task(self, *ids: str | Sequence[str]) -> dict[str, Any] | None:
        flat = [i for item in ids for i in ([item] if isinstance(item, str) else item)]
        return self._ask("query_task", ids=flat)

    def active_queues(self) -> dict[str, Any] | None:
        return self._ask("active_queues")

    def conf(self) -> dict[str, Any] | None:
        return self._ask("conf")

    def queued(self, queue: str, limit: int = 100) -> dict[str, Any]:
        """zq's own: the tasks waiting in ``queue``, in order, with their ages."""
        return self._ask("queued", queue=queue, limit=limit) or {}

    def task(self, task_id: str) -> dict[str, Any]:
        """zq's own: where the router holds the task now (``where`` empty: it does not;
        the results actor knows its state)."""
        return self._ask("task", id=task_id) or {}


Destination = Sequence[str] | str | None
Replies = list[dict[str, Any]]


def _names(destination: Destination) -> list[str] | None:
    if destination is None:
        return None
    return [destination] if isinstance(destination, str) else list(destination)
