"""``app.control``: requests to the router about running work."""

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

    def purge(self, queue: str | None = None) -> int:
        """Drop the tasks waiting in ``queue`` (every queue when None); returns how many."""
        return int(self._call("purge", queue=queue)["purged"])

    def revoke(self, task_id: str | Sequence[str], terminate: bool = False,
               signal: str = "SIGTERM") -> None:
        """Revoke tasks: a waiting one never runs; with ``terminate`` a running one is killed."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self._call("revoke", ids=ids, terminate=terminate, signal=signal)

    def rate_limit(self, task_name: str, rate_limit: str | float | None) -> None:
        """Change a task's rate limit across all workers (the router enforces it)."""
        self._call("rate_limit", task=task_name, rate_limit=rate_limit)
