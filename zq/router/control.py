"""Control operations: one function per operation, found in :data:`OPERATIONS`.

Each takes the router's core, the request's header and ``now``, and returns the fields of
its REPLY; a bad request raises :class:`ControlError`, answered as a one-line error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..protocol import Cmd, Message, attempt_label
from ..ratelimit import parse_rate
from .book import INFLIGHT, Entry
from .core import Core
from .inspect import inspect, router_stats
from .peers import ActorState
from .targets import ControlError, actors, count, hosts, queue_name, task_name

__all__ = ["OPERATIONS", "ControlError", "on_control"]

logger = logging.getLogger("zq.router")

Operation = Callable[[Core, dict[str, Any], float], dict[str, Any]]


def stats(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return router_stats(core)


def rate_limit(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    name = header.get("task")
    try:
        rate = parse_rate(header.get("rate_limit"))
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    if not isinstance(name, str) or not name:
        raise ControlError("rate_limit needs 'task'")
    core.schedule.set_rate(name, rate, override=True)
    return {"ok": True}


def revoke(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    """Waiting tasks (chord bodies held for their parts too) never run; prefetched ones
    are taken back; with ``terminate`` the process running one is killed. The ids stay
    revoked (bounded, journaled)."""
    ids = header.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ControlError("revoke needs 'ids'")
    terminate = bool(header.get("terminate"))
    signal_name = str(header.get("signal") or "SIGTERM")
    pulls: dict[bytes, list[str]] = {}
    for task_id in ids:
        core.book.revoke(task_id)
        for entry in core.book.entries(task_id):
            if core.unqueue(entry):
                core.end(entry, core.revoked_event(entry, "revoked"))
            elif entry.state == INFLIGHT:
                _revoke_inflight(core, entry, terminate, signal_name, pulls)
    for identity, pulled in pulls.items():
        core.reply(identity, Message(Cmd.CONTROL, {"op": "revoke", "ids": pulled}))
    return {"ok": True}


def _revoke_inflight(core: Core, entry: Entry, terminate: bool, signal_name: str,
                     pulls: dict[bytes, list[str]]) -> None:
    for actor in core.actors.values():
        if entry.key not in actor.inflight:
            continue
        if next(iter(actor.inflight)) != entry.key:
            pulls.setdefault(actor.identity, []).append(entry.id)  # prefetched
        # The first held runs, or a granted one may (see zq.router.pace): its supervisor
        # kills the actor only if it runs this very task.
        if terminate and (next(iter(actor.inflight)) == entry.key
                          or entry.key in actor.granted):
            _terminate(core, actor, signal_name, entry)


def _terminate(core: Core, actor: ActorState, signal_name: str, entry: Entry) -> None:
    if not actor.supervised:
        logger.warning("cannot terminate task %s on actor %s: it has no supervisor",
                       entry.id, actor.name)
        return
    # A supervisor's identity is its host name, which its actors announce. It kills the
    # actor unless that runs another task by then (this one ended).
    core.reply(actor.host.encode(), Message(Cmd.CONTROL, {
        "op": "kill", "actor": actor.identity, "signal": signal_name,
        "task": attempt_label(entry.uid, entry.retries)}))


def declare(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    try:
        core.declare(header.get("queues"))
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    return {"ok": True}


def purge(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    """Drop the queued tasks (of one queue): each ends REVOKED, so that a client waiting
    for it is answered. Chord bodies held for their parts are in no queue yet, and stay."""
    queue = header.get("queue")
    if queue is not None:
        queue = queue_name(header)
    purged = 0
    for name, waiting in core.dispatch.queues.items():
        if queue is None or name == queue:
            for entry in waiting.drain():
                core.end(entry, core.revoked_event(entry, "was purged"))
                purged += 1
    return {"purged": purged}


def terminate(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    """Celery's ``terminate``: revoke, and kill the process running the task."""
    return revoke(core, {**header, "terminate": True}, now)


# -- operations carried out by the workers ---------------------------------------------------
#
# The router forwards each to the actors or supervisors it is for (by their socket
# identities) and answers at once with whom it asked; they do not answer back.

def _tell_actors(core: Core, targets: list[ActorState], fields: dict[str, Any],
                 done: str) -> dict[str, Any]:
    for actor in targets:
        core.reply(actor.identity, Message(Cmd.CONTROL, fields))
    return {"replies": {actor.name: {"ok": done} for actor in targets}}


def _tell_hosts(core: Core, names: list[str], fields: dict[str, Any],
                done: str) -> dict[str, Any]:
    for host in names:
        core.reply(host.encode(), Message(Cmd.CONTROL, fields))
    return {"replies": {host: {"ok": done} for host in names}}


def _seconds(header: dict[str, Any], key: str) -> float | None:
    value = header.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1e9:
        raise ControlError(f"time_limit: '{key}' must be a number of seconds > 0, or null")
    return float(value)


def time_limit(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    """A task's soft and hard time limits, applied by actors to the tasks they start from
    now on; supervisors keep them for the actors they start later."""
    name = task_name(header)
    soft, hard = _seconds(header, "soft"), _seconds(header, "hard")
    if soft is not None and hard is not None and soft > hard:
        raise ControlError(f"time_limit: soft ({soft}) must not exceed hard ({hard})")
    fields = {"op": "time_limit", "task": name, "soft": soft, "hard": hard}
    _tell_hosts(core, hosts(core, header), fields, "")
    return _tell_actors(core, actors(core, header), fields,
                        f"time limits set for {name}: soft {soft}, hard {hard}")


def _consumer(core: Core, header: dict[str, Any], adding: bool) -> dict[str, Any]:
    """The actors start or stop taking from a queue, and announce themselves again with
    their new queues; their supervisors keep the change for the actors they replace."""
    queue = queue_name(header)
    targets = actors(core, header)
    op = "add_consumer" if adding else "cancel_consumer"
    if not adding:
        # At once, so that nothing more of it is handed out while the actor's READY is on
        # its way; what it holds already it keeps and runs.
        for actor in targets:
            actor.queues = tuple(q for q in actor.queues if q != queue)
    by_host: dict[str, list[str]] = {}
    for actor in targets:
        if actor.supervised:
            by_host.setdefault(actor.host, []).append(actor.name)
    for host, names in by_host.items():
        core.reply(host.encode(), Message(Cmd.CONTROL, {"op": op, "queue": queue,
                                                        "actors": names}))
    done = f"{'now' if adding else 'no longer'} consuming from {queue!r}"
    return _tell_actors(core, targets, {"op": op, "queue": queue}, done)


def add_consumer(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return _consumer(core, header, adding=True)


def cancel_consumer(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return _consumer(core, header, adding=False)


def shutdown(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    """A warm shutdown of the hosts named (or holding an actor named)."""
    return _tell_hosts(core, hosts(core, header), {"op": "shutdown"}, "shutting down")


def pool_grow(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    n = count(header, "n", 1)
    return _tell_hosts(core, hosts(core, header), {"op": "pool_grow", "n": n},
                       f"pool will grow by {n}")


def pool_shrink(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    n = count(header, "n", 1)
    return _tell_hosts(core, hosts(core, header), {"op": "pool_shrink", "n": n},
                       f"pool will shrink by {n} (idle actors first, none killed)")


def autoscale(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    most, least = count(header, "max"), count(header, "min")
    if least > most:
        raise ControlError(f"autoscale: min ({least}) must not exceed max ({most})")
    return _tell_hosts(core, hosts(core, header),
                       {"op": "autoscale", "max": most, "min": least},
                       f"autoscale now {most},{least}")


OPERATIONS: dict[str, Operation] = {
    "stats": stats, "rate_limit": rate_limit, "revoke": revoke, "terminate": terminate,
    "declare": declare, "purge": purge, "inspect": inspect, "time_limit": time_limit,
    "add_consumer": add_consumer, "cancel_consumer": cancel_consumer,
    "shutdown": shutdown, "pool_grow": pool_grow, "pool_shrink": pool_shrink,
    "autoscale": autoscale,
}


def on_control(core: Core, identity: bytes, msg: Message, now: float) -> None:
    op = msg.header.get("op")
    operation = OPERATIONS.get(op) if isinstance(op, str) else None
    try:
        if operation is None:
            raise ControlError(f"unknown control operation {op!r}")
        reply = operation(core, msg.header, now)
    except ControlError as exc:
        core.reply(identity, Message(Cmd.ERROR, {"rid": msg.header.get("rid"),
                                                 "error": "ZqError", "message": str(exc)}))
        return
    core.reply(identity, Message(Cmd.REPLY, {"rid": msg.header.get("rid"), **reply}))
