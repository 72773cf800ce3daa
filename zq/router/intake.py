"""Taking tasks in: validate a submitted task, route it to its queues, journal and place it.

A task answered ACCEPTED is journaled first (:mod:`.durable`); from then on it is never
lost. A resend of a task accepted already (its answer was lost) is answered ACCEPTED again
and not taken twice. While the journal cannot be written, tasks are refused with an error
that names it and why; those of a commit that failed are taken back (:func:`unwritten`).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from .. import protocol
from ..protocol import Cmd, Message, copy_id, event_types_problem
from ..ratelimit import parse_rate
from .book import Entry
from .core import Core
from .monitor import SNAPSHOT_TASKS
from .waiting import wait_problem

logger = logging.getLogger("zq.router")

# How often a client is told, per task name, that no worker has the task it sent.
WARN_EVERY_S = 10.0


def on_submit(core: Core, identity: bytes, msg: Message, now: float) -> None:
    """One task, or with a ``tasks`` list a batch ([header bytes, body] pairs)."""
    batch = msg.header.get("tasks")
    if batch is None:
        error = accept(core, identity, msg.header, msg.raw_header, msg.body, now)
        core.reply(identity, error or Message(Cmd.ACCEPTED, {"id": msg.header["id"]}))
        return
    batch_id = msg.header.get("id")
    if not isinstance(batch, list) or not isinstance(batch_id, str):
        core.refuse(identity, "a batch needs an 'id' string and 'tasks': a list of "
                              "[header, body] pairs")
        return
    accepted: list[str] = []
    errors: list[list[Any]] = []
    for item in batch:
        try:
            raw_header, body = item
            header = protocol.unpack(raw_header)
            if not isinstance(header, dict) or not isinstance(body, bytes):
                raise ValueError("not a [header map, body bytes] pair")
        except Exception as exc:
            errors.append([None, "ProtocolError", f"malformed batch item: {exc}"])
            continue
        error = accept(core, identity, header, raw_header, body, now)
        if error is None:
            accepted.append(header["id"])
        else:
            errors.append([error.header.get("id"), error.header["error"],
                           error.header["message"]])
    core.reply(identity, Message(Cmd.ACCEPTED, {"id": batch_id, "ids": accepted,
                                                "errors": errors}))


def on_publish(core: Core, identity: bytes, msg: Message, now: float) -> None:
    """One task sent without waiting: refused at once, or its ACCEPTED answered a little
    later, with others (see :meth:`Core.accept_later`)."""
    error = accept(core, identity, msg.header, msg.raw_header, msg.body, now)
    if error is not None:
        core.reply(identity, error)
    else:
        core.accept_later(identity, msg.header["id"], now)


def accept(core: Core, identity: bytes, header: dict[str, Any], raw_header: bytes | None,
           body: bytes, now: float) -> Message | None:
    """Journal and place one task; returns the error to answer with, or None."""
    problem = protocol.task_header_problem(header)
    task_id = header.get("id") if isinstance(header.get("id"), str) else None
    kind = "ProtocolError"
    if problem is None and len(body) > core.max_message_size:
        problem = (f"task {task_id} is {len(body)} bytes, over the router's "
                   f"max_message_size of {core.max_message_size}")
        kind = "PublishError"
    if problem is not None:
        logger.warning("refusing task from %r: %s", identity, problem)
        return protocol.error(problem, kind=kind, task_id=task_id)
    entry = Entry(header, raw_header, body)
    if core.book.known(entry.uid, entry.retries):
        return None  # a resend after a lost answer: accepted already
    queues = [entry.queue] if entry.queue else core.bindings.route(
        header.get("exchange", ""), header.get("rk"))
    if len(queues) > 1 and any(core.book.known(copy_id(entry.id, name), entry.retries)
                               for name in queues):
        return None  # a resend (after a router restart, too): its copies are here
    refusal = _refusal(core, header, queues, task_id)
    if refusal is not None:
        return refusal
    if not queues:
        # Not dropped in silence as AMQP would: it fails where everyone can see.
        where = f"exchange {header.get('exchange')!r} with routing key {header.get('rk')!r}"
        core.ended_unadmitted(entry, core.failure_event(
            entry, "NoRoute", f"no queue is bound for {where}"))
        return None
    if entry.id in core.book.revoked:
        core.ended_unadmitted(entry, core.revoked_event(entry, "revoked"))
        return None
    failure = core.durable.refusal(now)
    if failure is not None:
        return protocol.error(failure, kind="PublishError", task_id=task_id)
    if "rate_limit" in header and entry.name not in core.schedule.overrides:
        try:
            core.schedule.set_rate(entry.name, parse_rate(header["rate_limit"]))
        except ValueError as exc:
            return protocol.error(str(exc), kind="PublishError", task_id=task_id)
    core.sent(entry, queues)
    if len(queues) == 1:
        if not entry.queue:
            entry.queue = queues[0]
            entry.set_header(queue=queues[0])  # delivery_info and retries name it
        admit(core, entry, now)
        _warn_if_unknown(core, identity, entry, now)
        return None
    # Routed to several queues: one copy each, tracked apart (a copy retries, fails or is
    # redelivered on its own); all of them carry the task's id.
    core.book.remember_finished(entry.key)
    for name in queues:
        copy = Entry(dict(header, queue=name, copy_id=copy_id(entry.id, name)), None, body)
        if not core.book.known(copy.uid, copy.retries):
            admit(core, copy, now)
    return None


def _warn_if_unknown(core: Core, identity: bytes, entry: Entry, now: float) -> None:
    """Tell the sender (at most every WARN_EVERY_S per task name) that no connected actor
    of the task's queue has its task: it waits, parked, until one that has it connects."""
    if not core.unknown_task(entry.name, entry.queue):
        return
    key = (identity, entry.name)
    if now - core.warned.get(key, -WARN_EVERY_S) < WARN_EVERY_S:
        return
    if len(core.warned) >= 10_000:
        core.warned.clear()
    core.warned[key] = now
    core.reply(identity, Message(Cmd.ACCEPTED, {"ids": [], "warnings": [[
        entry.id, f"no worker consuming queue {entry.queue!r} has task {entry.name!r}: "
                  f"it waits until one that has it connects (is the name right?)"]]}))


def _refusal(core: Core, header: dict[str, Any], queues: list[str],
             task_id: str | None) -> Message | None:
    """The error for a task no queue takes as asked (``mandatory``, ``immediate``, a full
    queue), or None."""
    if not queues and header.get("mandatory"):
        where = f"exchange {header.get('exchange')!r} with routing key {header.get('rk')!r}"
        return protocol.error(f"no queue is bound for {where}", kind="NoRoute",
                              task_id=task_id)
    for name in queues:
        if header.get("immediate") and not any(
                a.credit > 0 and name in a.queues for a in core.actors.values()):
            return protocol.error(f"no worker consuming queue {name!r} can take the task "
                                  f"now (immediate=True)", kind="NoRoute", task_id=task_id)
        depth = core.dispatch.depth(name)
        limit = core.max_queue_length
        if limit is not None and depth >= limit:
            return protocol.error(f"queue {name!r} holds {depth} tasks, its limit "
                                  f"(max_queue_length)", kind="QueueFull", task_id=task_id)
    return None


def admit(core: Core, entry: Entry, now: float) -> None:
    """Journal a routed task and place it: from here on it is never lost."""
    entry.accepted_at = now
    if entry.raw_header is None:
        entry.raw_header = protocol.pack(entry.header)
    core.book.track(entry)
    if core.durable.admit(entry, entry.raw_header):
        core.place(entry, now)


def unwritten(core: Core, entries: list[Entry], failure: str) -> None:
    """Tasks admitted this step whose journal records could not be written: they were not
    accepted after all. Nothing of them stays (not placed, no state event, no record of
    an end, so a resend is taken anew), and their ACCEPTED answers become errors."""
    ids: set[str] = set()
    keys: set[tuple[str, int]] = set()
    for entry in entries:
        core.unqueue(entry)
        core.book.untrack(entry)
        ids.add(entry.id)
        keys.add((entry.id, entry.retries))
    core.events = [e for e in core.events if (e.get("id"), e.get("retries", 0)) not in keys]
    core.monitor.pending = [e for e in core.monitor.pending
                            if (e.get("uuid"), e.get("retries", 0)) not in keys]
    core.replies = [(identity, _unaccepted(msg, ids, failure))
                    for identity, msg in core.replies]
    for identity, later in core.later.items():
        for task_id in [i for i in later if i in ids]:
            del later[task_id]
            core.reply(identity, protocol.error(failure, kind="PublishError",
                                                task_id=task_id))


def _unaccepted(msg: Message, ids: set[str], failure: str) -> Message:
    if msg.cmd is not Cmd.ACCEPTED:
        return msg
    batch = msg.header.get("ids")
    if batch is None:
        task_id = msg.header.get("id")
        if task_id in ids:
            return protocol.error(failure, kind="PublishError", task_id=task_id)
        return msg
    refused = [i for i in batch if i in ids]
    if not refused:
        return msg
    return Message(Cmd.ACCEPTED, {
        **msg.header, "ids": [i for i in batch if i not in ids],
        "errors": [*msg.header.get("errors", []),
                   *([i, "PublishError", failure] for i in refused)]})


def on_wait(core: Core, identity: bytes, msg: Message, now: float) -> None:
    """A client waits in ``get()`` for these tasks (see :mod:`.waiting`): noted for each
    the router holds; the others are answered ``elsewhere``: the client asks the results
    actor for those."""
    ids = msg.header.get("ids")
    problem = wait_problem(ids)
    if problem is not None or not isinstance(ids, list):
        core.refuse(identity, problem or "WAIT needs 'ids'")
        return
    elsewhere = []
    # While the journal cannot be written no result leaves from here.
    writable = core.durable.failure is None
    for task_id in ids:
        if not writable:
            elsewhere.append(task_id)
        elif task_id in core.book.tasks:
            if not core.waiters.add(task_id, identity):
                elsewhere.append(task_id)
        elif (event := core.unstored_final(task_id)) is not None:
            core.waiters.push(identity, event)
        else:
            elsewhere.append(task_id)
    if elsewhere:
        core.reply(identity, Message(Cmd.STATES, {"states": [], "elsewhere": elsewhere}))


def on_monitor(core: Core, identity: bytes, msg: Message, now: float) -> None:
    """A receiver registers for ``types`` (leased for LEASE_S; its subscriptions keep
    them wanted after that) and is answered with what it would have seen so far."""
    types = msg.header.get("types")
    problem = event_types_problem(types)
    if problem is not None or not isinstance(types, list):
        logger.warning("refusing MONITOR from %r: %s", identity, problem)
        core.refuse(identity, f"MONITOR refused: {problem}")
        return
    monitor = core.monitor
    monitor.now = now
    monitor.lease(types, now)
    actors = [actor for actor in core.actors.values() if actor.taking]
    tasks = list(itertools.islice(core.book.tasks.values(), SNAPSHOT_TASKS))
    events = monitor.snapshot(tasks, actors, msg.header.get("wakeup") is True)
    if "*" not in types:
        events = [event for event in events if event["type"] in types]
    header: dict[str, Any] = {"events": events, "clock": monitor.clock,
                              "epoch": core.welcome.get("epoch")}
    if "rid" in msg.header:
        header["rid"] = msg.header["rid"]
    core.reply(identity, Message(Cmd.MONITOR, header))
