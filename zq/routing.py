"""Where a task goes: task_routes on the client, exchanges and bindings in the router.

A task is sent to a named queue. The client picks it from, in order: the call's
``queue=``, the call's ``exchange=``/``routing_key=`` (resolved by the router's bindings),
``task_routes`` (a dict by name or glob, a function, or a list of those, as in Celery),
the task's ``queue`` option, and the default queue.
"""

from __future__ import annotations

import fnmatch
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .config import Settings
    from .task import Task


EXCHANGE_TYPES = ("direct", "topic", "fanout")
MAX_QUEUE_NAME = 255


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


class Bindings:
    """The router's exchanges and what is bound to them.

    The default exchange ``""`` routes a key to the queue of that name, as AMQP's does.
    """

    def __init__(self) -> None:
        self.exchanges: dict[str, tuple[str, list[tuple[str, str]]]] = {}

    def declare(self, decls: Any) -> bool:
        """Add bindings; returns whether anything changed. Raises ValueError when malformed."""
        if not isinstance(decls, list):
            raise ValueError("declarations must be a list")
        changed = False
        for decl in decls:
            if not isinstance(decl, dict) or not all(
                    isinstance(decl.get(k), str) for k in ("queue", "exchange", "type", "key")):
                raise ValueError(f"malformed declaration {decl!r}")
            if decl["type"] not in EXCHANGE_TYPES:
                raise ValueError(f"exchange type {decl['type']!r} is not supported")
            if not decl["queue"] or len(decl["queue"]) > MAX_QUEUE_NAME:
                raise ValueError(f"a queue name must have 1 to {MAX_QUEUE_NAME} characters")
            if not decl["exchange"]:
                continue  # the default exchange needs no bindings
            kind, bound = self.exchanges.setdefault(decl["exchange"], (decl["type"], []))
            if kind != decl["type"]:
                raise ValueError(f"exchange {decl['exchange']!r} is declared as {kind}, "
                                 f"not {decl['type']}")
            binding = (decl["key"], decl["queue"])
            if binding not in bound:
                bound.append(binding)
                changed = True
        return changed

    def route(self, exchange: str, routing_key: str | None) -> list[str]:
        """Every queue a message goes to, as AMQP routes it: each binding that matches
        gives the message to its queue once. Empty when nothing is bound for it."""
        if not exchange:
            return [routing_key] if routing_key else []
        found = self.exchanges.get(exchange)
        if found is None:
            return []
        kind, bound = found
        if kind == "fanout":
            return list(unique(queue for _, queue in bound))
        if routing_key is None:
            return []
        if kind == "direct":
            return list(unique(queue for key, queue in bound if key == routing_key))
        return list(unique(queue for key, queue in bound if topic_matches(key, routing_key)))

    def to_list(self) -> list[dict[str, str]]:
        return [{"queue": q, "exchange": name, "type": kind, "key": key}
                for name, (kind, bound) in self.exchanges.items() for key, q in bound]


@dataclass(frozen=True, slots=True)
class Route:
    queue: str | None
    exchange: str
    routing_key: str | None
    priority: int | None


RouteFunction = Callable[..., Any]


class Router:
    """Resolves the client-side routing settings for one App."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._routes: list[Any] = _as_list(settings.task_routes)

    def _lookup(self, name: str, task: Task | None) -> dict[str, Any]:
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

    def route(self, name: str, task: Task | None, *, queue: str | None = None,
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


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on '.', ``*`` is one word, ``#`` zero or more."""
    return _topic(tuple(pattern.split(".")), tuple(key.split(".")))


def _topic(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return _topic(rest, words[1:])
    return False


def unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# -- the router's side: accepted tasks and the queues they wait in ---------------------

QUEUED, SCHEDULED, INFLIGHT, DEAD = "queued", "scheduled", "inflight", "dead"
# Accepted, written to the journal, and waiting for the fsync that makes it durable
# (``journal_fsync``): not handed out before then.
SYNCING = "syncing"


def copy_id(task_id: str, queue: str) -> str:
    """The identity of the copy of a task that went to ``queue`` (of several)."""
    return f"{task_id}\x1f{queue}"


def tracked_id(header: dict[str, Any]) -> Any:
    """The id a task message is tracked by: its ``copy_id`` when it is one of several
    copies, else its id."""
    return header.get("copy_id") or header.get("id")


class Entry:
    """One accepted task as the router holds it: its header, its opaque body, its place.

    ``uid`` is what the router, the journal and the actors track it by: the task id, or for
    one of the copies an exchange routed to several queues, ``copy_id`` (id and queue).
    """

    __slots__ = ("id", "uid", "name", "header", "raw_header", "body", "queue", "priority", "eta",
                 "expires", "retries", "state", "redeliveries", "accepted_at", "rate_slot")

    def __init__(self, header: dict[str, Any], raw_header: bytes | None, body: bytes):
        self.id: str = header["id"]
        self.uid: str = header.get("copy_id") or self.id
        self.name: str = header["task"]
        self.header = header
        self.raw_header = raw_header
        self.body = body
        self.queue: str = header.get("queue") or ""
        self.priority: int = header.get("priority") or 0
        self.eta: float | None = header.get("eta")
        self.expires: float | None = header.get("expires")
        self.retries: int = header.get("retries", 0)
        self.redeliveries: int = header.get("redeliveries", 0)
        self.state = QUEUED
        self.accepted_at = 0.0
        # Holds a start slot under its task's rate limit already (see zq.ratelimit).
        self.rate_slot = False

    @property
    def key(self) -> tuple[str, int]:
        return self.uid, self.retries

    @property
    def acks_late(self) -> bool:
        return bool(self.header.get("acks_late"))

    def set_header(self, **changes: Any) -> None:
        """Change the header that is sent on (the raw copy no longer matches it)."""
        self.header.update(changes)
        self.raw_header = None


class TaskQueue:
    """A named queue with ten priority levels; 0 is served first, FIFO within a level."""

    __slots__ = ("name", "levels", "size")

    def __init__(self, name: str):
        self.name = name
        self.levels: list[deque[Entry]] = [deque() for _ in range(10)]
        self.size = 0

    def push(self, entry: Entry, front: bool = False) -> None:
        level = self.levels[min(max(entry.priority, 0), 9)]
        if front:
            level.appendleft(entry)
        else:
            level.append(entry)
        entry.state = QUEUED
        entry.queue = self.name
        self.size += 1

    def pop(self) -> Entry | None:
        """The next live entry; entries marked dead while queued are skipped."""
        if self.size <= 0:
            return None
        for level in self.levels:
            while level:
                entry = level.popleft()
                if entry.state == QUEUED:
                    self.size -= 1
                    return entry
        self.size = 0
        return None

    def discard(self, entry: Entry) -> None:
        """Mark a queued entry dead; it is dropped when it reaches the front."""
        if entry.state == QUEUED:
            self.size -= 1
        entry.state = DEAD

    def drain(self) -> list[Entry]:
        entries = [e for level in self.levels for e in level if e.state == QUEUED]
        for level in self.levels:
            level.clear()
        self.size = 0
        return entries
