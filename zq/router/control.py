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
from .book import INFLIGHT, WAITING, Entry
from .core import Core
from .peers import ActorState

logger = logging.getLogger("zq.router")


class ControlError(Exception):
    """A control request that cannot be carried out; its text is the answer."""


Operation = Callable[[Core, dict[str, Any], float], dict[str, Any]]


def stats(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        **core.info(),
        "actors": len(core.actors),
        "hosts": sorted(core.hosts),
        "queued": {name: q.size + q.parked_count for name, q in core.dispatch.queues.items()
                   if q.size or q.parked},
        # Tasks no connected actor of their queue has, by queue and task name: they wait
        # for one that has them.
        "parked": {name: {task: len(entries) for task, entries in q.parked.items()}
                   for name, q in core.dispatch.queues.items() if q.parked},
        "scheduled": core.schedule.scheduled_count(),
        "inflight": sum(len(a.inflight) for a in core.actors.values()),
        # Tasks handed out stacked behind short ones, which an actor may start before
        # the router confirmed the DONEs before them (zq.router.pace).
        "granted": core.dispatch.granted,
        "tasks": len(core.book.tasks),
        # Chord bodies (and replaced tasks) held until their parts have ended.
        "chords_waiting": sum(1 for e in core.book.tasks.values() if e.state == WAITING),
    }


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
    """Drop the queued tasks (of one queue); chord bodies held for their parts are in no
    queue yet, and stay."""
    queue = header.get("queue")
    purged = 0
    for name, waiting in core.dispatch.queues.items():
        if queue is None or name == queue:
            for entry in waiting.drain():
                core.finish(entry)
                purged += 1
    return {"purged": purged}


OPERATIONS: dict[str, Operation] = {
    "stats": stats, "rate_limit": rate_limit, "revoke": revoke, "declare": declare,
    "purge": purge,
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
