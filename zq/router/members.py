"""Actors and worker hosts: who may take tasks, what they hold, and when they are lost.

An actor announces itself with READY (its queues, its credit, what it holds after a
reconnection), returns credit with DONE, and leaves with BYE. A supervisor speaks for its
host: its HEARTBEAT names the actors alive there and what busy ones run, and its LOST
reports one dead. A host silent past the host timeout loses its actors, by Celery's rules.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import protocol, states
from ..protocol import Cmd, Message
from .book import QUEUED, SCHEDULED, Entry
from .core import Core
from .peers import ActorState, HostState

logger = logging.getLogger("zq.router")

# An actor whose supervisor saw it exit cleanly is settled by its BYE within this long.
_DEPARTURE_GRACE_S = 2.0
# What a LOST naming an empty label means: the actor started nothing yet.
_NOTHING = ("", -1)


def on_hello(core: Core, identity: bytes, msg: Message, now: float) -> None:
    core.reply(identity, Message(Cmd.WELCOME, core.welcome_for(msg)))


def on_ready(core: Core, identity: bytes, msg: Message, now: float) -> None:
    h = msg.header
    queues = h.get("queues")
    credit = h.get("credit")
    holding = h.get("holding") or []
    outcomes = [r for r in h.get("done") or [] if isinstance(r, dict)] \
        if isinstance(h.get("done") or [], list) else []
    problem = protocol.ready_problem(queues, credit, holding)
    if problem is not None:
        core.refuse(identity, problem)
        return
    names: tuple[str, ...] = tuple(h["queues"])
    credit = int(h["credit"])
    actor = core.actors.get(identity)
    if actor is None:
        actor = ActorState(identity, str(h.get("host", "")), int(h.get("pid", 0)),
                           names, credit, bool(h.get("supervised")), now, last_seen=now)
        core.actors[identity] = actor
        logger.info("actor %s ready for %s with credit %d", actor.name, ",".join(names),
                    credit)
        core.monitor.worker_online(actor)
    else:
        if actor.placeholder:
            actor.pid = int(h.get("pid", 0))
            core.monitor.worker_online(actor)
        actor.queues, actor.credit = names, credit
        actor.placeholder = False
        actor.granted.clear()  # it starts nothing it holds before this WELCOME
        actor.depth = 0
    actor.window = credit + len(holding)
    _take_registered(actor, h.get("registered"))
    # Outcomes it could not be sure the router recorded (it reconnected, or was told to
    # announce itself): taken first, so that a replayed copy of a finished task never runs.
    confirmed = [_outcome(core, record) for record in outcomes]
    # Held tasks the router places elsewhere by now (handed out again after a restart
    # while this actor was busy) or that finished: the actor must drop them.
    disowned = [[uid, retries] for uid, retries in holding
                if not core.claim(actor, uid, retries)]
    if h.get("declare"):
        try:
            core.declare(h["declare"])
        except ValueError as exc:
            logger.error("actor %r declared bad bindings: %s", identity, exc)
    if actor.supervised and actor.host not in core.hosts:
        core.hosts[actor.host] = HostState(actor.host, b"", now)
    welcome = core.welcome_for(msg)
    welcome["lease_s"] = core.lease_s
    if confirmed:
        welcome["confirm"] = confirmed
    if disowned:
        logger.warning("actor %s holds %d task(s) placed elsewhere or finished; it drops "
                       "them", actor.name, len(disowned))
        welcome["drop"] = disowned
    core.reply(identity, Message(Cmd.WELCOME, welcome))
    if core.dispatch.unpark(actor):
        core.dirty = True
    core.set_hungry(actor)


def _take_registered(actor: ActorState, names: Any) -> None:
    """The task names a READY says its actor's app has: the router hands it only those
    (see zq.router.dispatch), and inspect lists them. Optional: an actor that never says
    is given any task; a READY that says nothing, or something that is not a list of
    names (logged), leaves what the last one said."""
    if names is None:
        return
    problem = protocol.registered_problem(names)
    if problem is not None:
        logger.warning("ignoring the task names in the READY of actor %s: %s", actor.name,
                       problem)
        return
    actor.registered, actor.tasks = tuple(names), frozenset(names)


def on_done(core: Core, identity: bytes, msg: Message, now: float) -> None:
    """One finished task, or with ``done`` a list of them; each returns one credit."""
    actor = core.actors.get(identity)
    records = msg.header.get("done")
    items = records if isinstance(records, list) else [msg.header]
    if actor is None:
        # From before a router restart (queued in the actor's socket while the router was
        # down): the tasks are done, so the journal's replayed copies must not run.
        # Not confirmed: it hands them over again with the READY it sends on RESYNC.
        for record in items:
            if isinstance(record, dict):
                _outcome(core, record)
        core.reply(identity, Message(Cmd.RESYNC))
        return
    confirmed = [_done_one(core, actor, record) for record in items if isinstance(record, dict)]
    if actor.placeholder:
        # Known only from its supervisor's word: it must announce itself (handing these
        # outcomes over again) before it may start anything, so no CONFIRM yet.
        actor.credit = 0
        core.reply(identity, Message(Cmd.RESYNC))
        return
    # Recorded now (journaled in this step): the actor may forget these outcomes, and
    # start its next reserved task; with none reserved, or only granted ones (which it
    # may start anyway), it is told with its next TASK.
    core.confirm(identity, confirmed, urgent=len(actor.granted) < len(actor.inflight))
    core.set_hungry(actor)


def _final_event(record: dict[str, Any]) -> dict[str, Any] | None:
    """The final state event a DONE carries, when it is a valid one."""
    event = record.get("event")
    if isinstance(event, dict) and protocol.event_problem(event) is None:
        return event
    return None


def _part(record: dict[str, Any]) -> tuple[str, int] | None:
    """The chord part a DONE says its outcome settles, in place of its task header's (a
    chain in a chord's header that ended before the link that carries the membership)."""
    part = record.get("chord")
    if part is None:
        return None
    problem = protocol.chord_part_problem(part)
    if problem is not None:
        logger.warning("ignoring the chord part %r of a DONE for %r: %s", part,
                       record.get("id"), problem)
        return None
    return part[0], part[1]


def _ended(core: Core, entry: Entry, record: dict[str, Any],
           actor: ActorState | None = None) -> None:
    """End a task the router holds as its DONE says: with its final event; relayed to the
    replacement it sent (``replaced``); or without an event (it raised Ignore, or
    ignores its result)."""
    event = _final_event(record)
    if event is not None:
        core.end(entry, event, _part(record), by=actor, runtime=record.get("runtime"))
    elif record.get("replaced"):
        core.relay(entry)
    else:
        core.finish(entry, ignored=True, part=_part(record))


def _key(record: dict[str, Any]) -> list[Any]:
    return [record.get("id"), record.get("retries", 0)]


def _done_one(core: Core, actor: ActorState, record: dict[str, Any]) -> list[Any]:
    key = (record.get("id"), record.get("retries", 0))
    entry = actor.release(key)  # type: ignore[arg-type]
    actor.credit += 1
    if entry is not None:
        core.pace.observe(entry.name, record.get("runtime"))
    if entry is None:
        _outcome(core, record)
        return _key(record)
    if record.get("requeue"):
        started = bool(record.get("started"))
        limit = core.redelivery_limit(entry)
        if started and entry.redeliveries >= limit:
            core.fail(entry, "Reject", f"the task rejected itself {entry.redeliveries + 1} "
                                       f"times (max_redeliveries={limit}); not requeued again",
                      by=actor)
        else:
            if started and core.monitor.on:
                core.monitor.task_requeued(entry, actor)
            core.requeue(entry, redelivered=started)
        return _key(record)
    core.monitor.processed[actor.identity] = core.monitor.processed.get(actor.identity, 0) + 1
    _ended(core, entry, record, actor)
    return _key(record)


def _outcome(core: Core, record: dict[str, Any]) -> list[Any]:
    """A DONE for a task the router no longer places with that actor (it gave the actor
    up, or restarted, or the actor hands it over again): its event is forwarded and
    journaled (the results actor keeps the first final state of an attempt, and a real
    outcome wins over a presumed loss), and a replayed copy still waiting need not run
    (one that replaced itself waits as a relay). A task handed back unfinished (requeue)
    keeps its copy."""
    if record.get("requeue"):
        return _key(record)
    uid, retries = record.get("id"), record.get("retries", 0)
    event = _final_event(record)
    entry = core.book.tasks.get(uid) if isinstance(uid, str) else None
    if entry is not None and entry.retries == retries and entry.state in (QUEUED, SCHEDULED):
        core.unqueue(entry)
        _ended(core, entry, record)
    elif event is not None and isinstance(uid, str) and isinstance(retries, int):
        core.outcome(uid, retries, event, _part(record))
    return _key(record)


def on_events(core: Core, identity: bytes, msg: Message, now: float) -> None:
    """State changes reported by an actor while its task runs: forwarded in order."""
    if identity not in core.actors:
        core.refuse(identity, "EVENTS are taken from actors only; clients send them to "
                              "the results actor")
        return
    events = msg.header.get("events")
    if not isinstance(events, list):
        core.refuse(identity, "EVENTS needs an 'events' list")
        return
    actor = core.actors[identity]
    for event in events:
        problem = protocol.event_problem(event)
        if problem:
            logger.warning("dropping event from actor %r: %s", identity, problem)
            continue
        if event["state"] == states.STARTED and core.monitor.on:
            entry = core.book.tasks.get(event.get("copy") or event["id"])
            core.monitor.task_started(event, actor, entry.queue if entry else None)
        # Sent only for the events (a worker run with -E), not to be stored.
        if not event.get("event_only"):
            core.events.append(event)


def on_heartbeat(core: Core, identity: bytes, msg: Message, now: float) -> None:
    if "actors" not in msg.header:
        # An actor's: answered, so that it knows the router still counts it alive (its
        # lease to start reserved tasks), or told to announce itself.
        actor = core.actors.get(identity)
        known = actor is not None and not actor.placeholder
        core.reply(identity, Message(Cmd.HEARTBEAT if known else Cmd.RESYNC))
        if actor is not None and known and not actor.supervised:
            core.monitor.worker_heartbeat(actor.host, [actor], now)
        return
    problem = protocol.heartbeat_problem(msg.header)
    if problem is not None:
        core.refuse(identity, problem)
        return
    host, actors = msg.header["host"], msg.header["actors"]
    state = core.hosts.get(host)
    if state is None:
        state = core.hosts[host] = HostState(host, identity, now)
    state.identity, state.last_seen = identity, now
    _take_pool(state, msg.header.get("pool"))
    alive = {protocol.identity(a) for a in actors}
    _adopt_running(core, host, msg.header.get("running"), alive, now)
    for actor in [a for a in core.actors.values() if a.host == host]:
        if (actor.identity not in alive and now - actor.registered_at > _DEPARTURE_GRACE_S
                and actor.departed_at is None):
            core.actor_lost(actor.identity, "not among its supervisor's actors")
    core.monitor.worker_heartbeat(host, [a for a in core.actors.values() if a.host == host
                                         and a.taking], now, msg.header.get("loadavg"))


def _take_pool(state: HostState, pool: Any) -> None:
    """The host's facts for inspect: optional, and bad ones are ignored with a warning
    (the facts of the heartbeat before stay)."""
    if pool is None:
        return
    problem = protocol.pool_facts_problem(pool)
    if problem is not None:
        logger.warning("ignoring the pool facts in the heartbeat of host %s: %s",
                       state.host, problem)
        return
    state.pool = pool


def _adopt_running(core: Core, host: str, running: Any, alive: set[bytes | None],
                   now: float) -> None:
    """Tasks that busy actors of ``host`` are running, as their supervisor reports them:
    an actor the router does not know yet (it restarted while the task ran) is recorded
    as holding its task, so that the journal's copy is not run again."""
    if not isinstance(running, list):
        return
    for item in running:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], str)
                and isinstance(item[2], int)):
            continue
        identity = protocol.identity(item[0])
        if identity is None or identity not in alive or identity in core.actors:
            continue
        actor = ActorState(identity, host, 0, (), 0, True, now, placeholder=True)
        core.actors[identity] = actor
        core.claim(actor, item[1], item[2])


def on_lost(core: Core, identity: bytes, msg: Message, now: float) -> None:
    """A supervisor reports one of its actors dead; nobody else may."""
    actor = protocol.identity(msg.header.get("actor"))
    if actor is None:
        core.refuse(identity, "LOST needs 'actor', an identity")
        return
    state = core.actors.get(actor)
    if state is None:
        return  # gone already, or never announced: nothing held to act on
    # A supervisor's identity is its host name, which its actors announce.
    if state.supervised and identity != state.host.encode():
        logger.warning("ignoring LOST for %r from %r, which is not its supervisor",
                       actor, identity)
        core.refuse(identity, "LOST is taken only from the actor's own supervisor")
        return
    if msg.header.get("clean"):
        # A clean exit: its DONEs and BYE travel on its own socket and may still be on
        # their way; wait for the BYE rather than judge its tasks now.
        state.departed_at = now
        state.credit = 0
        core.dispatch.forget(actor)
        return
    reason, error = str(msg.header.get("reason", "exited")), msg.header.get("error")
    label = msg.header.get("started")
    started = protocol.started_attempt(label) if isinstance(label, str) else None
    if started is not None:
        core.actor_lost(actor, reason, error, started=started[0], running=started[1],
                        now=now)
    elif label == "":
        core.actor_lost(actor, reason, error, started=_NOTHING, now=now)
    else:
        # Which task it started last is not known: the first held may have.
        core.actor_lost(actor, reason, error)


def on_bye(core: Core, identity: bytes, msg: Message, now: float) -> None:
    """An actor's last word: every DONE came before it, so nothing it holds started.
    From a supervisor: its host leaves, and whatever its actors still hold is judged."""
    host = msg.header.get("host")
    if isinstance(host, str) and identity == host.encode() and host in core.hosts:
        del core.hosts[host]
        core.monitor.host_gone(host)
        # An actor already seen exiting cleanly is settled by its own BYE (its DONEs
        # travel on its socket and may still be on their way), or by housekeeping.
        for actor in [a for a in core.actors.values()
                      if a.host == host and a.departed_at is None]:
            core.actor_lost(actor.identity, "its worker host shut down")
        logger.info("host %s left", host)
        return
    leaving = core.actors.pop(identity, None)
    core.dispatch.forget(identity)
    if leaving is None:
        return
    logger.info("actor %s left", leaving.name)
    core.monitor.worker_offline(leaving)
    for entry in reversed(leaving.inflight.values()):
        core.enqueue(entry, front=True)


def housekeeping(core: Core, now: float) -> None:
    """Actors that left without a BYE, and hosts silent past the host timeout."""
    for actor in [a for a in core.actors.values()
                  if a.departed_at is not None and now - a.departed_at > _DEPARTURE_GRACE_S]:
        core.actor_lost(actor.identity, "exited without saying goodbye")
    for host in [h for h in core.hosts.values() if now - h.last_seen > core.host_timeout_s]:
        logger.warning("host %s silent for %.1fs: its actors are lost", host.host,
                       now - host.last_seen)
        del core.hosts[host.host]
        core.monitor.host_gone(host.host)
        for actor in [a for a in core.actors.values() if a.host == host.host]:
            core.actor_lost(actor.identity, f"host {host.host} lost", presumed=True)
    # An actor with no supervisor speaks for itself: silent past the host timeout, lost.
    for actor in [a for a in core.actors.values() if not a.supervised
                  and now - a.last_seen > core.host_timeout_s]:
        core.actor_lost(actor.identity, f"silent for {now - actor.last_seen:.1f}s",
                        presumed=True)
    core.schedule.compact_expiries(list(core.book.tasks.values()))
    core.monitor.expire(now)
