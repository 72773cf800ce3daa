"""Whom an operation is for: ``destination`` names actors (``host/index/generation``) or
hosts (a supervisor's name, which stands for all its actors); none means everybody."""

from __future__ import annotations

from typing import Any

from .core import Core
from .peers import ActorState

# The name the router's own facts are filed under in an inspect answer (revoked ids, tasks
# waiting for their ETA): it holds them, not any worker.
ROUTER = "router"


class ControlError(Exception):
    """A control or inspect request that cannot be carried out; its text is the answer."""


def destination(header: dict[str, Any]) -> set[str] | None:
    """The names a request is for, or None for everybody."""
    names = header.get("destination")
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ControlError("'destination' must be a list of actor or host names")
    return set(names)


def actors(core: Core, header: dict[str, Any]) -> list[ActorState]:
    """The live actors a request is for, by name (placeholders and departing ones are not
    workers to ask anything of)."""
    names = destination(header)
    return [actor for actor in core.actors.values() if actor.taking
            and (names is None or actor.name in names or actor.host in names)]


def hosts(core: Core, header: dict[str, Any]) -> list[str]:
    """The supervised hosts a request is for: named, or holding a named actor."""
    names = destination(header)
    known = set(core.hosts)
    if names is None:
        return sorted(known)
    owners = {a.host for a in core.actors.values() if a.name in names}
    return sorted(h for h in known if h in names or h in owners)


def task_name(header: dict[str, Any]) -> str:
    name = header.get("task")
    if not isinstance(name, str) or not name:
        raise ControlError(f"{header.get('op')} needs 'task', a task name")
    return name


def queue_name(header: dict[str, Any]) -> str:
    queue = header.get("queue")
    if not isinstance(queue, str) or not queue or len(queue) > 255:
        raise ControlError(f"{header.get('op')} needs 'queue', a queue name")
    return queue


def count(header: dict[str, Any], key: str, default: int | None = None) -> int:
    value = header.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000:
        raise ControlError(f"{header.get('op')} needs '{key}', an integer from 0 to 10000")
    return value
