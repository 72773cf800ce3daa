"""Celery-shaped events (``task-sent`` ... ``worker-offline``), built by the router from
what it handles anyway, and only while somebody wants them.

Who wants which types is known two ways: the results actor reports the types its stream's
subscribers asked for (``\\x00want:<type>`` subscriptions, which its XPUB socket sees and
which ZeroMQ drops when a subscriber goes), and a receiver registering with MONITOR leases
its types for ``LEASE_S`` (covering the moment before the results actor's word arrives).
With nobody subscribed, each helper below returns after one test of :attr:`Monitor.on`.

Every event gets the next ``clock`` (Celery's Lamport clock field; here the router's
count). A MONITOR is answered with what a receiver would have seen had it listened all
along (the tasks held, the actors alive) and the clock that answer is current to: the
receiver drops published events with a clock not past it, and so misses nothing and sees
nothing twice. See docs/events.md.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from collections import OrderedDict
from typing import Any

from .. import states
from ..protocol import EVENT_TYPES
from .book import INFLIGHT, Entry
from .peers import ActorState


logger = logging.getLogger("zq.router")

LEASE_S = 30.0
# Tasks a MONITOR answer describes at most (the oldest held first).
SNAPSHOT_TASKS = 10_000
# Actors remembered as reported offline, so that a second judgement of the same loss
# (one waiting for its last DONEs) does not say it again.
_GONE_MEMORY = 10_000
# Celery's utcoffset(): hours east of UTC, as an integer.
UTCOFFSET = -(time.altzone if time.daylight and time.localtime().tm_isdst > 0
              else time.timezone) // 3600
SW = {"sw_ident": "zq", "sw_ver": "0.1.0", "sw_sys": platform.system()}

_ENDED = {states.SUCCESS: "task-succeeded", states.FAILURE: "task-failed",
          states.RETRY: "task-retried", states.REVOKED: "task-revoked",
          states.REJECTED: "task-rejected"}

Event = dict[str, Any]


class Monitor:
    """The event types wanted, the clock, and the events built and not yet sent."""

    def __init__(self) -> None:
        self.hostname = f"router@{socket.gethostname()}"
        self.pid = os.getpid()
        self.local_host = socket.gethostname()
        self.on = False
        self.wanted: frozenset[str] = frozenset()
        self._subscribed: frozenset[str] = frozenset()
        self._leases: dict[str, float] = {}
        self.clock = 0
        self.pending: list[Event] = []
        # Tasks each actor finished (Celery's ``processed``), and when each host last
        # heartbeat (its ``freq``).
        self.processed: dict[bytes, int] = {}
        self._beats: dict[str, float] = {}
        self._gone: OrderedDict[bytes, None] = OrderedDict()
        self.now = 0.0

    # -- who wants what -------------------------------------------------------------------

    def subscribed(self, types: frozenset[str]) -> None:
        """What the results actor's subscribers want now."""
        self._subscribed = types
        self._update()

    def lease(self, types: list[str], now: float) -> None:
        for kind in types:
            self._leases[kind] = now + LEASE_S
        self._update()

    def expire(self, now: float) -> None:
        if any(until <= now for until in self._leases.values()):
            self._leases = {k: u for k, u in self._leases.items() if u > now}
            self._update()

    def _update(self) -> None:
        kinds = set(self._subscribed) | set(self._leases)
        self.wanted = EVENT_TYPES if "*" in kinds else frozenset(kinds & EVENT_TYPES)
        self.on = bool(self.wanted)

    def wants(self, kind: str) -> bool:
        return self.on and kind in self.wanted

    # -- building -------------------------------------------------------------------------

    def _emit(self, kind: str, hostname: str, pid: int, fields: Event) -> None:
        self.clock += 1
        event = {"type": kind, "timestamp": self.now or time.time(), "hostname": hostname,
                 "pid": pid, "clock": self.clock, "utcoffset": UTCOFFSET}
        event.update(fields)
        self.pending.append(event)

    def take(self) -> list[Event]:
        pending, self.pending = self.pending, []
        return pending

    def task_sent(self, entry: Entry, queue: str) -> None:
        if self.wants("task-sent"):
            self._emit("task-sent", self.hostname, self.pid, _task_fields(entry, queue))

    def task_received(self, entry: Entry, actor: ActorState) -> None:
        if self.wants("task-received"):
            self._emit("task-received", actor.name, actor.pid,
                       dict(_task_fields(entry, entry.queue), host=actor.host))

    def task_started(self, event: Event, actor: ActorState, queue: str | None) -> None:
        if self.wants("task-started"):
            self._emit("task-started", actor.name, actor.pid,
                       {"uuid": event["id"], "name": event.get("name"),
                        "retries": event.get("retries", 0), "queue": queue,
                        "host": actor.host})

    def task_ended(self, event: Event, entry: Entry | None, actor: ActorState | None,
                   runtime: Any = None) -> None:
        """The final state event of an attempt, as Celery's event of that end."""
        kind = _ENDED.get(event.get("state", ""))
        if kind is None or not self.wants(kind):
            return
        fields: Event = {"uuid": event["id"], "name": event.get("name"),
                         "retries": event.get("retries", 0)}
        if entry is not None and entry.queue:
            fields["queue"] = entry.queue
        exc = event.get("exc") if isinstance(event.get("exc"), dict) else None
        if kind == "task-succeeded":
            # The result travels serialized; a receiver makes Celery's ``result`` repr of
            # it with its own accepted content types (the router never unpickles).
            fields["runtime"] = runtime if isinstance(runtime, (int, float)) else None
            if "body" in event:
                fields["ct"], fields["body"] = event.get("ct"), event["body"]
            else:
                fields["result"] = "None"
        elif kind in ("task-failed", "task-retried", "task-rejected"):
            fields["exception"] = exception_repr(exc)
            fields["traceback"] = (exc or {}).get("traceback") or ""
            if kind == "task-rejected":
                fields["requeue"] = False
        elif kind == "task-revoked":
            why = _why(exc)
            fields["terminated"] = "terminated" in why
            fields["signum"] = None
            fields["expired"] = why.startswith("expired")
        if actor is not None:
            fields["host"] = actor.host
            self._emit(kind, actor.name, actor.pid, fields)
        else:
            self._emit(kind, self.hostname, self.pid, fields)

    def task_requeued(self, entry: Entry, actor: ActorState) -> None:
        """A task that rejected itself with requeue=True."""
        if self.wants("task-rejected"):
            self._emit("task-rejected", actor.name, actor.pid,
                       {"uuid": entry.id, "name": entry.name, "retries": entry.retries,
                        "queue": entry.queue, "requeue": True, "host": actor.host})

    def worker_online(self, actor: ActorState) -> None:
        self._gone.pop(actor.identity, None)
        if self.wants("worker-online"):
            self._emit("worker-online", actor.name, actor.pid, _worker_fields(actor, 0))

    def worker_heartbeat(self, host: str, actors: list[ActorState], now: float,
                         loadavg: Any = None) -> None:
        last = self._beats.get(host)
        self._beats[host] = now
        if not self.wants("worker-heartbeat"):
            return
        freq = round(now - last, 2) if last is not None and now > last else 1.0
        loadavg = self._loadavg(host, loadavg)
        for actor in actors:
            fields = _worker_fields(actor, self.processed.get(actor.identity, 0), freq)
            fields["loadavg"] = loadavg
            self._emit("worker-heartbeat", actor.name, actor.pid, fields)

    def _loadavg(self, host: str, given: Any) -> list[float] | None:
        """A supervisor's word for its load average if it gave one; else the router's
        own, when the host is on this machine; else None."""
        if isinstance(given, list) and len(given) == 3 \
                and all(isinstance(x, (int, float)) for x in given):
            return [float(x) for x in given]
        # A host's name is its machine's, its supervisor's pid and a tag.
        if (host == self.local_host or host.startswith(self.local_host + "-")) \
                and hasattr(os, "getloadavg"):
            return [round(x, 2) for x in os.getloadavg()]
        return None

    def worker_offline(self, actor: ActorState) -> None:
        processed = self.processed.pop(actor.identity, 0)
        if actor.identity in self._gone:
            return
        self._gone[actor.identity] = None
        if len(self._gone) > _GONE_MEMORY:
            self._gone.popitem(last=False)
        if self.wants("worker-offline"):
            self._emit("worker-offline", actor.name, actor.pid,
                       _worker_fields(actor, processed))

    def host_gone(self, host: str) -> None:
        self._beats.pop(host, None)

    # -- a receiver's start ---------------------------------------------------------------

    def snapshot(self, tasks: list[Entry], actors: list[ActorState], wakeup: bool
                 ) -> list[Event]:
        """What a receiver starting now would have seen, at the current clock: an online
        (and with ``wakeup`` a heartbeat) for each actor, a task-sent for each task held
        and a task-received for each held by an actor."""
        out: list[Event] = []
        base = {"timestamp": self.now or time.time(), "clock": self.clock,
                "utcoffset": UTCOFFSET}
        for actor in actors:
            fields = _worker_fields(actor, self.processed.get(actor.identity, 0))
            out.append({"type": "worker-online", "hostname": actor.name, "pid": actor.pid,
                        **base, **fields})
            if wakeup:
                out.append({"type": "worker-heartbeat", "hostname": actor.name,
                            "pid": actor.pid, **base, **fields,
                            "loadavg": self._loadavg(actor.host, None)})
        holders = {id(entry): actor for actor in actors for entry in actor.inflight.values()}
        for entry in tasks[:SNAPSHOT_TASKS]:
            out.append({"type": "task-sent", "hostname": self.hostname, "pid": self.pid,
                        **base, "timestamp": entry.accepted_at or base["timestamp"],
                        **_task_fields(entry, entry.queue)})
            holder = holders.get(id(entry))
            if entry.state == INFLIGHT and holder is not None:
                out.append({"type": "task-received", "hostname": holder.name,
                            "pid": holder.pid, **base, **_task_fields(entry, entry.queue),
                            "host": holder.host})
        return out


def _task_fields(entry: Entry, queue: str | None) -> Event:
    h = entry.header
    return {"uuid": entry.id, "name": entry.name, "retries": entry.retries,
            "queue": queue, "eta": h.get("eta"), "expires": h.get("expires"),
            "exchange": h.get("exchange", ""), "routing_key": h.get("rk"),
            "root_id": h.get("root_id") or entry.id, "parent_id": h.get("parent_id")}


def _worker_fields(actor: ActorState, processed: int, freq: float = 1.0) -> Event:
    return {"host": actor.host, "queues": list(actor.queues), "freq": freq,
            # One task runs at a time; the rest an actor holds are reserved.
            "active": min(len(actor.inflight), 1), "processed": processed, **SW}


def exception_repr(exc: dict[str, Any] | None) -> str:
    """Celery's ``exception`` field, ``repr(exc)``, from an exception as data."""
    if not exc:
        return ""
    args = exc.get("args")
    if not isinstance(args, list):
        args = [exc.get("message", "")]
    return f"{exc.get('type', 'Exception')}({', '.join(repr(a) for a in args)})"


def _why(exc: dict[str, Any] | None) -> str:
    args = (exc or {}).get("args")
    if isinstance(args, list) and args and isinstance(args[0], str):
        return args[0]
    return str((exc or {}).get("message", ""))
