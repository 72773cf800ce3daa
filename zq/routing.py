"""Where a task goes, as the client decides it: task_routes, exchanges and queues.

A task is sent to a named queue. The client picks it from, in order: the call's
``queue=``, the call's ``exchange=``/``routing_key=`` (resolved by the router's bindings),
``task_routes`` (a dict by name or glob, a function, or a list of those, as in Celery),
the task's ``queue`` option, and the default queue.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Protocol

from .config import Settings
from .errors import ConfigurationError
from .protocol import EXCHANGE_TYPES


class Routable(Protocol):
    """What routing reads of a task (a :class:`zq.Task`): its own routing options."""

    @property
    def queue(self) -> str | None: ...

    @property
    def exchange(self) -> str | None: ...

    @property
    def routing_key(self) -> str | None: ...

    @property
    def priority(self) -> int | None: ...


@dataclass(frozen=True)
class Exchange:
    """A named exchange: ``direct`` matches routing keys exactly, ``topic`` by pattern,
    ``fanout`` sends to every queue bound to it whatever the key."""

    name: str
    type: str = "direct"

    def __post_init__(self) -> None:
        if self.type not in EXCHANGE_TYPES:
            raise ConfigurationError(f"exchange {self.name!r}: type must be one of "
                                     f"{', '.join(EXCHANGE_TYPES)}, not {self.type!r}")


@dataclass(frozen=True)
class Queue:
    """A queue bound to an exchange with a binding key (``video.#`` on a topic exchange)."""

    name: str
    exchange: Exchange | str | None = None
    routing_key: str | None = None

    def declaration(self) -> dict[str, str]:
        exchange = self.exchange
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        if exchange is None:
            exchange = Exchange(self.name)
        return {"queue": self.name, "exchange": exchange.name, "type": exchange.type,
                "key": self.routing_key if self.routing_key is not None else self.name}


def declarations(task_queues: Any) -> list[dict[str, str]]:
    """The bindings of an app's ``task_queues`` as the router takes them."""
    if not task_queues:
        return []
    out = []
    for queue in task_queues:
        if isinstance(queue, str):
            queue = Queue(queue)
        if not isinstance(queue, Queue):
            raise ConfigurationError(f"task_queues entries must be zq.Queue, not {queue!r}")
        out.append(queue.declaration())
    return out


@dataclass(frozen=True, slots=True)
class Route:
    queue: str | None
    exchange: str
    routing_key: str | None
    priority: int | None


class TaskRoutes:
    """Resolves where an App's tasks go: its ``task_routes`` and default settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._routes: list[Any] = _as_list(settings.task_routes)

    def _lookup(self, name: str, task: Routable | None) -> dict[str, Any]:
        for route in self._routes:
            if callable(route):
                found = route(name, (), {}, {}, task=task)
                if found:
                    return {"queue": found} if isinstance(found, str) else dict(found)
                continue
            for pattern, target in route.items():
                if _matches(pattern, name):
                    return {"queue": target} if isinstance(target, str) else dict(target)
        return {}

    def route(self, name: str, task: Routable | None, *, queue: str | None = None,
              exchange: str | None = None, routing_key: str | None = None,
              priority: int | None = None) -> Route:
        if priority is not None and (not isinstance(priority, int) or not 0 <= priority <= 9):
            raise ValueError(f"priority must be an integer from 0 to 9, not {priority!r}")
        if queue is None and exchange is None and routing_key is None:
            found = self._lookup(name, task)
            queue = found.get("queue")
            exchange = found.get("exchange")
            routing_key = found.get("routing_key")
            if priority is None:
                priority = found.get("priority")
        if queue is None and exchange is None and routing_key is None and task is not None:
            queue = task.queue
            exchange = task.exchange
            routing_key = task.routing_key
        if priority is None and task is not None:
            priority = task.priority
        if priority is None:
            priority = self.settings.task_default_priority
        if queue is None and exchange is None and routing_key is None:
            queue = self.settings.task_default_queue
        return Route(queue, exchange or "", routing_key, priority)


def _as_list(routes: Any) -> list[Any]:
    if routes is None:
        return []
    if isinstance(routes, (dict, str)) or callable(routes):
        routes = [routes]
    out = []
    for route in routes:
        if isinstance(route, str):
            raise ConfigurationError("task_routes entries must be dicts or functions, "
                                     f"not the string {route!r}")
        out.append(route)
    return out


def _matches(pattern: Any, name: str) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.match(name) is not None
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return bool(pattern == name)
