"""Where a task goes, as the client decides it: task_routes, exchanges and queues.

A task is sent to a named queue, or to an exchange with a routing key that the router's
bindings resolve. The client picks the destination from, in order: the call's ``queue=``,
``exchange=`` and ``routing_key=``; ``task_routes`` (a dict by name or glob, a function,
or a list of those, as in Celery); the task's own ``queue``/``exchange``/``routing_key``
options; and last the defaults, as Celery has them:

* with neither ``task_default_exchange`` nor ``task_default_routing_key`` set, the task
  goes to the queue ``task_default_queue`` ("celery");
* with either set, it goes to the exchange ``task_default_exchange`` (the default
  exchange ``""`` routes a key to the queue of that name) with the routing key
  ``task_default_routing_key`` (else ``task_default_queue``).

A destination that names a routing key but no exchange uses ``task_default_exchange``;
one that names an exchange but no key uses ``task_default_routing_key``. In
``task_queues``, a queue declared without an exchange is bound to
``task_default_exchange`` (of ``task_default_exchange_type``) when that is set, else to
an exchange of its own name; one declared without a routing key is bound with
``task_default_routing_key`` when that is set, else with its own name.
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

    def declaration(self, settings: Settings | None = None) -> dict[str, str]:
        """This queue's binding as the router takes it; ``settings`` give the defaults
        for what the queue leaves out (see the module's docstring)."""
        exchange = self.exchange
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        if exchange is None:
            if settings is not None and settings.task_default_exchange:
                exchange = Exchange(settings.task_default_exchange,
                                    settings.task_default_exchange_type)
            else:
                exchange = Exchange(self.name)
        key = self.routing_key
        if key is None and settings is not None:
            key = settings.task_default_routing_key
        return {"queue": self.name, "exchange": exchange.name, "type": exchange.type,
                "key": key if key is not None else self.name}


def declarations(task_queues: Any, settings: Settings | None = None) -> list[dict[str, str]]:
    """The bindings of an app's ``task_queues`` as the router takes them.

    With ``settings``, their defaults apply, and when ``task_queues`` is empty but
    ``task_default_exchange`` is set, the default queue is declared bound to it, as Celery
    declares it.
    """
    if not task_queues:
        if settings is None or not settings.task_default_exchange:
            return []
        task_queues = [Queue(settings.task_default_queue)]
    out = []
    for queue in task_queues:
        if isinstance(queue, str):
            queue = Queue(queue)
        if not isinstance(queue, Queue):
            raise ConfigurationError(f"task_queues entries must be zq.Queue, not {queue!r}")
        out.append(queue.declaration(settings))
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
        settings = self.settings
        if priority is None:
            priority = settings.task_default_priority
        if queue is None and exchange is None and routing_key is None:
            if not settings.task_default_exchange and settings.task_default_routing_key is None:
                return Route(settings.task_default_queue, "", None, priority)
            routing_key = settings.task_default_routing_key or settings.task_default_queue
        if queue is None:
            if exchange is None:
                exchange = settings.task_default_exchange
            if routing_key is None:
                routing_key = settings.task_default_routing_key
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
