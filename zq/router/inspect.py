"""Inspect: what the router knows of the work, answered from memory, in Celery's shapes.

Each method takes the core, the request's header and ``now`` and returns its answer: a
map by worker name (an actor's identity, ``host/index/generation``; a host's name for
``conf``; ``router`` for what the router itself holds, revoked ids and tasks waiting for
their ETA). The facts the router does not learn from the work (pid, uptime, tasks
processed, resource use, pool size, settings) come with the supervisors' heartbeats.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from .. import serialization
from .book import INFLIGHT, QUEUED, SCHEDULED, SYNCING, WAITING, Entry
from .core import Core
from .peers import ActorState
from .targets import ROUTER, ControlError, actors, count, hosts, queue_name

Method = Callable[[Core, dict[str, Any], float], dict[str, Any]]

# Arguments are shown decoded only for these content types (never unpickled here), and
# only from bodies this small; others are described.
_READABLE = frozenset({"application/x-msgpack", "application/json"})
_READABLE_BODY = 64 * 1024


def router_stats(core: Core) -> dict[str, Any]:
    """The router's view: connected actors and hosts, queue lengths, tasks in flight."""
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


# -- the pieces of an answer ---------------------------------------------------------------

def facts(core: Core, actor: ActorState) -> dict[str, Any]:
    """What the actor's supervisor last said of it."""
    host = core.hosts.get(actor.host)
    found = host.pool.get("actors", {}).get(actor.name) if host is not None else None
    return found if isinstance(found, dict) else {}


def _plain(value: Any) -> Any:
    """``value`` as the answer can carry it: anything but plain data as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v) for k, v in value.items()}
    return repr(value)


def _arguments(entry: Entry) -> tuple[Any, Any]:
    content_type = entry.header.get("ct", "")
    if content_type not in _READABLE or len(entry.body) > _READABLE_BODY:
        return f"<{len(entry.body)} bytes of {content_type}>", {}
    try:
        args, kwargs = serialization.loads(entry.body, content_type, _READABLE)
    except Exception:
        return "<unreadable>", {}
    return _plain(args), _plain(kwargs)


def request(core: Core, entry: Entry, actor: ActorState | None = None,
            running: bool = False) -> dict[str, Any]:
    """A task as Celery's inspect shows a request."""
    args, kwargs = _arguments(entry)
    h = entry.header
    started = facts(core, actor).get("began") if actor is not None and running else None
    known = actor is not None and facts(core, actor).get("task") == list(entry.key)
    return {
        "id": entry.id, "name": entry.name, "type": entry.name, "args": args,
        "kwargs": kwargs, "hostname": actor.name if actor is not None else None,
        "time_start": started if known and started else None,
        "acknowledged": not entry.acks_late, "retries": entry.retries,
        "delivery_info": {"exchange": h.get("exchange") or "", "routing_key":
                          h.get("rk") or entry.queue, "queue": entry.queue,
                          "priority": entry.priority, "redelivered": bool(h.get("redelivered"))},
        "worker_pid": actor.pid if actor is not None else None,
    }


def _held(core: Core, actor: ActorState) -> list[dict[str, Any]]:
    """What the actor holds, the first (the one it runs) marked ``running``."""
    return [dict(request(core, entry, actor, position == 0), running=position == 0)
            for position, entry in enumerate(actor.inflight.values())]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()


# -- Celery's methods -----------------------------------------------------------------------

def active(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {a.name: [r for r in _held(core, a) if r.pop("running")]
            for a in actors(core, header)}


def reserved(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {a.name: [r for r in _held(core, a) if not r.pop("running")]
            for a in actors(core, header)}


def scheduled(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {ROUTER: [{"eta": _iso(when), "eta_ts": when, "priority": entry.priority,
                      "rate_limited": entry.rate_slot, "request": request(core, entry)}
                     for when, entry in core.schedule.scheduled()]}


def revoked(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {ROUTER: list(core.book.revoked)}


def registered(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {a.name: sorted(a.registered) for a in actors(core, header)}


def ping(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {a.name: {"ok": "pong", "last_seen_s": round(now - a.last_seen, 3)}
            for a in actors(core, header)}


def stats(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    answer: dict[str, Any] = {a.name: _actor_stats(core, a, now) for a in actors(core, header)}
    if header.get("destination") is None:
        answer[ROUTER] = router_stats(core)
    return answer


def _actor_stats(core: Core, actor: ActorState, now: float) -> dict[str, Any]:
    own = facts(core, actor)
    host = core.hosts.get(actor.host)
    pool = host.pool if host is not None else {}
    started = own.get("started")
    return {
        "pid": actor.pid, "hostname": actor.host,
        "uptime": round(now - started, 3) if started else None,
        "total": own.get("processed", {}), "rusage": own.get("rusage", {}),
        "prefetch_count": actor.window, "queues": list(actor.queues),
        "pool": {"implementation": "zq actor processes",
                 "max-concurrency": pool.get("size"),
                 "processes": sorted(a.get("pid", 0) for a in pool.get("actors", {}).values()),
                 "autoscaler": pool.get("autoscale"), "prefetch": pool.get("prefetch"),
                 "supervisor_pid": pool.get("pid"),
                 "supervisor_uptime": round(now - pool["started"], 3) if pool else None},
    }


def query_task(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    ids = header.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ControlError("query_task needs 'ids', a list of task ids")
    wanted = set(ids)
    answer: dict[str, Any] = {}
    for actor in actors(core, header):
        found = {}
        for held in _held(core, actor):
            if held["id"] in wanted:
                found[held["id"]] = ["active" if held.pop("running") else "reserved", held]
        answer[actor.name] = found
    return answer


def active_queues(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {a.name: [{"name": q, "routing_key": q, "exchange": {"name": "", "type": "direct"},
                      "queued": core.dispatch.depth(q)} for q in a.queues]
            for a in actors(core, header)}


def conf(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    return {host: core.hosts[host].pool.get("conf", {}) for host in hosts(core, header)}


# -- beyond Celery --------------------------------------------------------------------------

def queued(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    """The tasks waiting in a queue, in the order they will be handed out, with ages."""
    name = queue_name(header)
    limit = count(header, "limit", 100)
    waiting = core.dispatch.queues.get(name)
    tasks: list[dict[str, Any]] = []
    for level in waiting.levels if waiting is not None else ():
        for entry in level:
            if len(tasks) >= limit:
                break
            if entry.state == QUEUED:
                tasks.append({"id": entry.id, "name": entry.name, "priority": entry.priority,
                              "retries": entry.retries, "accepted_at": entry.accepted_at,
                              "age_s": round(now - entry.accepted_at, 3),
                              "redelivered": bool(entry.header.get("redelivered"))})
    return {"queue": name, "size": waiting.size if waiting is not None else 0,
            "tasks": tasks}


def task(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    """Where a task is now, as far as the router holds it (each copy of a fanout task);
    ``where`` is empty for one it does not hold (finished, or never sent here)."""
    task_id = header.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise ControlError("task needs 'id', a task id")
    return {"id": task_id, "revoked": task_id in core.book.revoked,
            "where": [_whereabouts(core, entry) for entry in core.book.entries(task_id)]}


def _whereabouts(core: Core, entry: Entry) -> dict[str, Any]:
    place: dict[str, Any] = {"name": entry.name, "retries": entry.retries,
                             "accepted_at": entry.accepted_at}
    if entry.state == QUEUED:
        place.update(state="queued", queue=entry.queue)
    elif entry.state == SCHEDULED:
        when = next((w for w, e in core.schedule.scheduled() if e is entry), None)
        place.update(state="scheduled", until=when, rate_limited=entry.rate_slot)
    elif entry.state == WAITING:
        chord = core.chords.get(entry.id)
        place.update(state="waiting for its chord", parts_ended=len(chord.parts) if chord
                     else 0, parts=entry.header.get("chord_size"))
    elif entry.state == INFLIGHT:
        place.update(_holder(core, entry))
    elif entry.state == SYNCING:
        place.update(state="being made durable")
    else:
        place.update(state=entry.state)
    return place


def _holder(core: Core, entry: Entry) -> dict[str, Any]:
    for actor in core.actors.values():
        if entry.key in actor.inflight:
            running = next(iter(actor.inflight)) == entry.key
            since = request(core, entry, actor, running)["time_start"]
            return {"state": "active" if running else "reserved", "actor": actor.name,
                    "since": since}
    return {"state": "handed out"}


METHODS: dict[str, Method] = {
    "active": active, "reserved": reserved, "scheduled": scheduled, "revoked": revoked,
    "registered": registered, "ping": ping, "stats": stats, "query_task": query_task,
    "active_queues": active_queues, "conf": conf, "queued": queued, "task": task,
}


def inspect(core: Core, header: dict[str, Any], now: float) -> dict[str, Any]:
    """The CONTROL operation ``inspect``: its ``method`` answers, in ``answer``."""
    name = header.get("method")
    method = METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        raise ControlError(f"unknown inspect method {name!r}; known: {', '.join(METHODS)}")
    return {"answer": method(core, header, now)}
