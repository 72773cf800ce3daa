"""The router's state and the rules its parts share, without sockets or a clock.

:class:`Core` holds the task table (:mod:`.book`), the timers (:mod:`.schedule`), the
queues and credit (:mod:`.dispatch`), the actors and hosts (:mod:`.peers`) and what waits
for the journal (:mod:`.durable`). The message handlers (:mod:`.intake`, :mod:`.members`,
:mod:`.control`) change it through the rules here, each given ``now``; what is to be sent
collects in :attr:`Core.replies` and :attr:`Core.events`, which only the loop sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .. import protocol, states
from ..protocol import Message, exception_data
from .bindings import Bindings
from .book import INFLIGHT, QUEUED, SCHEDULED, Book, Entry
from .dispatch import Dispatch
from .durable import Durable, Log
from .peers import ActorState, HostState
from .schedule import Schedule

logger = logging.getLogger("zq.router")


class Core:
    def __init__(self, journal: Log, *, max_redeliveries: int = 3,
                 max_queue_length: int | None = None, max_message_size: int = 1 << 24,
                 host_timeout_s: float = 10.0):
        self.max_redeliveries = max_redeliveries
        self.max_queue_length = max_queue_length
        self.max_message_size = max_message_size
        self.host_timeout_s = host_timeout_s
        self.book = Book(journal)
        self.bindings = Bindings()
        # Set when declarations changed the bindings: the loop saves them.
        self.bindings_changed = False
        self.schedule = Schedule()
        self.dispatch = Dispatch()
        self.durable = Durable(journal)
        self.actors: dict[bytes, ActorState] = {}
        self.hosts: dict[str, HostState] = {}
        # What the loop sends: replies to peers, and state events for the results actor.
        self.replies: list[tuple[bytes, Message]] = []
        self.events: list[dict[str, Any]] = []
        # Something was queued or some actor has new credit: a dispatch round is due.
        self.dirty = False
        # What a WELCOME tells a peer: the results actor's endpoints, the router's epoch.
        self.welcome: dict[str, Any] = {}
        # What the loop adds to ``stats`` (its epoch, the journal's counts).
        self.info: Callable[[], dict[str, Any]] = dict

    def reply(self, identity: bytes, msg: Message) -> None:
        self.replies.append((identity, msg))

    def refuse(self, identity: bytes, message: str) -> None:
        """Answer a bad message with a one-line ProtocolError."""
        self.replies.append((identity, protocol.error(message)))

    def welcome_for(self, msg: Message) -> dict[str, Any]:
        header = dict(self.welcome)
        if "rid" in msg.header:
            header["rid"] = msg.header["rid"]
        return header

    def declare(self, decls: Any) -> None:
        """Add exchange bindings; raises ValueError when they are malformed."""
        if self.bindings.declare(decls):
            self.bindings_changed = True

    # -- placing a task -----------------------------------------------------------------

    def place(self, entry: Entry, now: float) -> None:
        """Put an accepted task where it waits: expired, scheduled, or queued."""
        if entry.expires is not None and entry.expires <= now:
            self.expire(entry)
        elif entry.eta is not None and entry.eta > now:
            self.schedule.at(entry.eta, entry)
        else:
            self.enqueue(entry)

    def enqueue(self, entry: Entry, front: bool = False) -> None:
        if entry.id in self.book.revoked:
            # Handed back (prefetched, its actor gone) after a revoke the actor never read.
            self.revoked_event(entry, "revoked")
            self.finish(entry)
            return
        self.dispatch.push(entry, front=front)
        self.schedule.watch_expiry(entry)
        self.dirty = True

    def requeue(self, entry: Entry, redelivered: bool) -> None:
        if redelivered:
            entry.redeliveries += 1
            entry.set_header(redelivered=True, redeliveries=entry.redeliveries)
        self.enqueue(entry, front=True)

    def redelivery_limit(self, entry: Entry) -> int:
        limit = entry.header.get("max_redeliveries")
        return limit if isinstance(limit, int) else self.max_redeliveries

    def fire(self, now: float) -> None:
        """Timers and expiries whose time has come."""
        for entry in self.schedule.due(now):
            if entry.rate_slot:
                self.enqueue(entry, front=True)
            else:
                self.place(entry, now)
        for uid, retries in self.schedule.expired(now):
            entry = self.book.tasks.get(uid)
            if entry is not None and entry.retries == retries and entry.state == QUEUED:
                self.dispatch.discard(entry)
                self.expire(entry)

    # -- ending a task ------------------------------------------------------------------

    def finish(self, entry: Entry) -> None:
        self.book.retire(entry)

    def fail(self, entry: Entry, kind: str, message: str) -> None:
        self.failure_event(entry, kind, message)
        self.finish(entry)

    def expire(self, entry: Entry) -> None:
        self.revoked_event(entry, "expired before it could run")
        self.finish(entry)

    def unqueue(self, entry: Entry) -> bool:
        """Take a waiting (queued or scheduled) entry out; False when it is not waiting."""
        if entry.state == QUEUED:
            self.dispatch.discard(entry)
        elif entry.state != SCHEDULED:
            return False
        return True

    # -- events -------------------------------------------------------------------------

    def event(self, entry: Entry, state: str, **extra: Any) -> None:
        if entry.uid != entry.id:
            extra["copy"] = entry.uid
        self.events.append(protocol.state_event(entry.id, state, retries=entry.retries,
                                                name=entry.name, **extra))

    def failure_event(self, entry: Entry, kind: str, message: str) -> None:
        self.event(entry, states.FAILURE, exc=exception_data(kind, message))

    def revoked_event(self, entry: Entry, why: str) -> None:
        self.event(entry, states.REVOKED, exc=exception_data(
            "TaskRevokedError", f"task {entry.id} {why}", args=[why]))

    # -- dispatch -----------------------------------------------------------------------

    def set_hungry(self, actor: ActorState) -> None:
        if self.dispatch.update(actor):
            self.dirty = True

    def deal(self, now: float) -> dict[bytes, list[Entry]]:
        """A dispatch round: what each hungry actor gets now."""
        def admit(entry: Entry) -> bool:
            if entry.expires is not None and entry.expires <= now:
                self.expire(entry)
                return False
            return self.schedule.start_slot(entry, now) is None

        return self.dispatch.round(admit)

    def undeliverable(self, identity: bytes, entries: list[Entry]) -> None:
        """Tasks that could not be sent to an actor: back to the front of their queues."""
        actor = self.actors.get(identity)
        for entry in reversed(entries):
            if actor is not None:
                actor.inflight.pop(entry.key, None)
            self.enqueue(entry, front=True)
        self.actor_lost(identity, "unreachable")

    def claim(self, actor: ActorState, uid: str, retries: int) -> bool:
        """An actor re-announcing after a router restart holds this task: keep it there.
        False when it may not run it: finished, or handed to another actor meanwhile."""
        entry = self.book.tasks.get(uid)
        if entry is None or entry.retries != retries:
            return False
        if entry.state == INFLIGHT:
            return actor.inflight.get(entry.key) is entry
        if entry.state == QUEUED:
            self.dispatch.discard(entry)
        entry.state = INFLIGHT
        actor.inflight[entry.key] = entry
        return True

    # -- lost actors --------------------------------------------------------------------

    def actor_lost(self, identity: bytes, reason: str, error: str | None = None) -> None:
        """Celery's rules for the tasks of a dead actor; prefetched ones always go back."""
        actor = self.actors.pop(identity, None)
        self.dispatch.forget(identity)
        if actor is None:
            return
        logger.warning("actor %s lost (%s) holding %d task(s)", actor.name, reason,
                       len(actor.inflight))
        for position, entry in enumerate(actor.inflight.values()):
            if position > 0:  # prefetched, never started
                self.requeue(entry, redelivered=False)
            else:
                self._running_task_lost(entry, reason, error)

    def _running_task_lost(self, entry: Entry, reason: str, error: str | None) -> None:
        if entry.id in self.book.revoked:
            self.revoked_event(entry, "revoked and terminated")
            self.finish(entry)
            return
        if error == "TimeLimitExceeded":
            limit = entry.header.get("time_limit")
            self.fail(entry, "TimeLimitExceeded",
                      f"TimeLimitExceeded({limit if limit is not None else ''}): the task "
                      f"ran past its hard time limit and its process was killed")
            return
        late = entry.acks_late and entry.header.get("reject_on_worker_lost") is not False
        limit = self.redelivery_limit(entry)
        if late and entry.redeliveries < limit:
            self.requeue(entry, redelivered=True)
        elif late:
            self.fail(entry, "WorkerLostError",
                      f"Worker exited prematurely ({reason}); the task was redelivered "
                      f"{entry.redeliveries} times (max_redeliveries={limit}) and is "
                      f"not tried again")
        else:
            self.fail(entry, "WorkerLostError", f"Worker exited prematurely: {reason}")
