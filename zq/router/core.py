"""The router's state and the rules its parts share, without sockets or a clock.

:class:`Core` holds the task table (:mod:`.book`), the timers (:mod:`.schedule`), the
queues and credit (:mod:`.dispatch`), the actors and hosts (:mod:`.peers`), the chords
whose bodies wait for their parts (:mod:`.chords`) and what waits for the journal
(:mod:`.durable`). The message handlers (:mod:`.intake`, :mod:`.members`,
:mod:`.control`) change it through the rules here, each given ``now``; what is to be sent
collects in :attr:`Core.replies` and :attr:`Core.events`, which only the loop sends.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from .. import protocol, states
from ..protocol import RELAY_INDEX, Cmd, Message, exception_data
from .bindings import Bindings
from .book import INFLIGHT, QUEUED, SCHEDULED, WAITING, Book, Entry
from .chords import IGNORED, Chords, chain_membership, membership, waits
from .dispatch import Dispatch
from .durable import Durable, Log
from .monitor import Monitor
from .pace import Pace
from .peers import ActorState, HostState
from .schedule import Schedule
from .waiting import Waiters

logger = logging.getLogger("zq.router")

# How long an ACCEPTED for a task sent without waiting may wait, to travel with others (or
# not at all, if the task's final state goes to the same client first), and how many may.
ACCEPT_LATER_S = 0.002
ACCEPT_LATER_MAX = 1000


class Core:
    def __init__(self, journal: Log, *, max_redeliveries: int = 3,
                 max_queue_length: int | None = None, max_message_size: int = 1 << 24,
                 host_timeout_s: float = 10.0):
        self.max_redeliveries = max_redeliveries
        self.max_queue_length = max_queue_length
        self.max_message_size = max_message_size
        self.host_timeout_s = host_timeout_s
        # An actor starts a reserved task only if it heard from the router this recently
        # (see members.on_heartbeat), well before the router would count it lost.
        self.lease_s = host_timeout_s / 2
        self.book = Book(journal)
        self.bindings = Bindings()
        # Set when declarations changed the bindings: the loop saves them.
        self.bindings_changed = False
        self.schedule = Schedule()
        self.pace = Pace()
        self.dispatch = Dispatch(self.pace, self.runnable)
        self.durable = Durable(journal)
        self.chords = Chords(journal)
        # Clients waiting in get() for tasks held here (see .waiting).
        self.waiters = Waiters()
        # Celery-shaped events, built only while somebody wants them (see .monitor).
        self.monitor = Monitor()
        # Chord parts that ended and are not counted yet: counted in turn, so that a
        # cascade (a release that ends a task that is a part itself) is a loop, not a
        # recursion as deep as the chords are nested.
        self._ended_parts: deque[tuple[str, int, dict[str, Any]]] = deque()
        self._counting = False
        self.actors: dict[bytes, ActorState] = {}
        self.hosts: dict[str, HostState] = {}
        # What the loop sends: replies to peers, and state events for the results actor.
        self.replies: list[tuple[bytes, Message]] = []
        self.events: list[dict[str, Any]] = []
        # Final events recorded in the journal that the results actor has not confirmed
        # storing yet, by journal sequence: sent again to a restarted results actor.
        self.unstored: OrderedDict[int, dict[str, Any]] = OrderedDict()
        # The newest final one of each task among them, by task id (see unstored_final).
        self._unstored_final: dict[str, int] = {}
        # DONEs recorded and not yet confirmed to their actors (see ``confirm``).
        self.confirms: dict[bytes, list[list[Any]]] = {}
        # ACCEPTEDs that may wait a moment (tasks sent with PUBLISH), per client, and since
        # when the oldest waits (see ``accept_later``).
        self.later: dict[bytes, dict[str, None]] = {}
        self.later_since: float | None = None
        # When each client was last told that no worker has a task name it sent.
        self.warned: dict[tuple[bytes, str], float] = {}
        # Something was queued or some actor has new credit: a dispatch round is due.
        self.dirty = False
        # What a WELCOME tells a peer: the results actor's endpoints, the router's epoch.
        self.welcome: dict[str, Any] = {}
        # What the loop adds to ``stats`` (its epoch, the journal's counts).
        self.info: Callable[[], dict[str, Any]] = dict

    def confirm(self, identity: bytes, keys: list[list[Any]], *, urgent: bool) -> None:
        """Tell an actor these DONEs are recorded. Urgent when it holds a reserved task it
        may start only then (or, with fsync, when the answer must wait for the sync);
        otherwise the confirmation rides with the next TASK to that actor, or goes at the
        next housekeeping (``flush_confirms``), saving a message per task."""
        if urgent or self.durable.journal.fsync:
            self.reply(identity, Message(Cmd.CONFIRM, {"done": keys}))
        else:
            self.confirms.setdefault(identity, []).extend(keys)

    def accept_later(self, identity: bytes, task_id: str, now: float) -> None:
        """Answer ACCEPTED for ``task_id`` within ACCEPT_LATER_S, with the others due to
        ``identity`` by then, or not at all if its final state goes to that client first."""
        self.later.setdefault(identity, {})[task_id] = None
        if self.later_since is None:
            self.later_since = now

    def covered(self, identity: bytes, ids: list[str]) -> None:
        """These tasks' final states go to ``identity``: they answer for their ACCEPTEDs."""
        later = self.later.get(identity)
        if later:
            for task_id in ids:
                later.pop(task_id, None)
            if not later:
                del self.later[identity]
                if not self.later:
                    self.later_since = None

    def flush_later(self, now: float, force: bool = False) -> None:
        """The ACCEPTEDs that waited long enough (or all, ``force``), one per client."""
        if self.later_since is None:
            return
        if not force and now - self.later_since < ACCEPT_LATER_S \
                and sum(len(ids) for ids in self.later.values()) < ACCEPT_LATER_MAX:
            return
        for identity, ids in self.later.items():
            if ids:
                self.reply(identity, Message(Cmd.ACCEPTED, {"ids": list(ids)}))
        self.later.clear()
        self.later_since = None

    def take_confirms(self, identity: bytes) -> list[list[Any]] | None:
        """The confirmations waiting for ``identity``, to send with a TASK."""
        return self.confirms.pop(identity, None)

    def flush_confirms(self) -> None:
        for identity, keys in self.confirms.items():
            self.reply(identity, Message(Cmd.CONFIRM, {"done": keys}))
        self.confirms.clear()

    def seen(self, identity: bytes, now: float) -> None:
        """A message came from ``identity``: an actor's liveness."""
        actor = self.actors.get(identity)
        if actor is not None:
            actor.last_seen = now

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
        """Put an accepted task where it waits: expired, held for its chord's parts,
        scheduled, or queued. A relay (replayed after a restart) ran already, so its
        expiry, which is about starting, no longer applies to it."""
        if waits(entry.header) and entry.header.get("relay"):
            self.hold(entry)
        elif entry.expires is not None and entry.expires <= now:
            self.expire(entry)
        elif waits(entry.header):
            self.hold(entry)
        elif entry.eta is not None and entry.eta > now:
            self.schedule.at(entry.eta, entry)
        else:
            self.enqueue(entry)

    def enqueue(self, entry: Entry, front: bool = False) -> None:
        if entry.id in self.book.revoked:
            # Handed back (prefetched, its actor gone) after a revoke the actor never read.
            self.end(entry, self.revoked_event(entry, "revoked"))
            return
        self.dispatch.push(entry, front=front)
        self.schedule.watch_expiry(entry)
        self.dirty = True

    def send_on(self, entry: Entry) -> None:
        """A released chord body: to its timer when it has an ETA (``fire`` then places
        it, past or not), else to its queue."""
        if entry.eta is not None:
            self.schedule.at(entry.eta, entry)
        else:
            self.enqueue(entry)

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
            waiting = self.book.tasks.get(uid)
            if waiting is not None and waiting.retries == retries and waiting.state == QUEUED:
                self.dispatch.discard(waiting)
                self.expire(waiting)

    # -- ending a task ------------------------------------------------------------------

    # Every way a task ends comes through ``finish``, ``end`` or ``ended_unadmitted``
    # (a purged one through ``end``, REVOKED)
    # (``fail`` and ``expire`` end it with the router's event): each counts the chord
    # part the task is, if it is one (see ``_ended``).

    def finish(self, entry: Entry, *, ignored: bool = False,
               part: tuple[str, int] | None = None) -> None:
        """The task ended without an event: (``ignored``) its DONE carried none (it raised
        Ignore, or ignores its result). As a chord part it failed. A purged task does not
        end here: it ends REVOKED, with an event, so that ``get()`` raises."""
        self.book.retire(entry)
        self._forget_parts(entry)
        part = part or membership(entry.header) or chain_membership(entry.header)
        if part is not None:
            self.count_part(part, self.eventless_event(entry, ignored))

    def end(self, entry: Entry, event: dict[str, Any],
            part: tuple[str, int] | None = None, *, by: ActorState | None = None,
            runtime: Any = None) -> None:
        """The task ended with ``event``: it goes to the results actor, and is journaled
        with the task's end, so that a kill cannot lose both the task and its result.
        ``part``: the chord part this outcome settles, when its DONE named one; ``by``:
        the actor it ended on, and the ``runtime`` its DONE reported."""
        self.events.append(event)
        if self.monitor.on:
            self.monitor.task_ended(event, entry, by, runtime)
        self._unstored(self.book.retire(entry, event), event)
        self.waiters.ended(event)
        self._forget_parts(entry)
        self._ended(entry, event, part)

    def ended_unadmitted(self, entry: Entry, event: dict[str, Any]) -> None:
        """A task that ended as it came in (no route, revoked already)."""
        self.events.append(event)
        if self.monitor.on:
            self.monitor.task_ended(event, entry, None)
        self._unstored(self.book.ended_unadmitted(entry, event), event)
        self._ended(entry, event, None)

    def outcome(self, uid: str, retries: int, event: dict[str, Any],
                part: tuple[str, int] | None = None) -> None:
        """A final event reported for an attempt the router no longer tracks (a late
        DONE): forwarded, and journaled until stored. It ended already, as a part of
        its header's chord too; a chord part its DONE names is counted now (the first
        outcome of a part counts)."""
        self.events.append(event)
        if self.monitor.on:
            self.monitor.task_ended(event, None, None)
        self._unstored(self.book.records.finished(uid, retries, event), event)
        if part is not None and event.get("state") != states.RETRY:
            self.count_part(part, event)

    def _unstored(self, seq: int | None, event: dict[str, Any]) -> None:
        if seq is not None:
            self.keep_unstored(seq, event)

    def keep_unstored(self, seq: int, event: dict[str, Any]) -> None:
        """A final event journaled as ``seq``, kept until the results actor stores it."""
        self.unstored[seq] = event
        if event.get("state") in states.READY_STATES:
            self._unstored_final[event["id"]] = seq

    def unstored_final(self, task_id: str) -> dict[str, Any] | None:
        """The final event of ``task_id`` if it ended recently (the results actor has not
        said it stored it yet): a client waiting for it gets it from here."""
        seq = self._unstored_final.get(task_id)
        return None if seq is None else self.unstored.get(seq)

    def stored(self, upto: int) -> None:
        """The results actor stored every final event up to ``upto``."""
        if not self.unstored or next(iter(self.unstored)) > upto:
            return
        while self.unstored and next(iter(self.unstored)) <= upto:
            seq, event = self.unstored.popitem(last=False)
            if self._unstored_final.get(event.get("id")) == seq:  # type: ignore[arg-type]
                del self._unstored_final[event["id"]]
        self.book.records.stored(upto)

    def fail(self, entry: Entry, kind: str, message: str, *, presumed: bool = False,
             by: ActorState | None = None) -> None:
        self.end(entry, self.failure_event(entry, kind, message, presumed=presumed), by=by)

    def expire(self, entry: Entry) -> None:
        self.end(entry, self.revoked_event(entry, "expired before it could run"))

    def unqueue(self, entry: Entry) -> bool:
        """Take a waiting (queued, scheduled, or held for its chord) entry out; False when
        it is not waiting."""
        if entry.state == QUEUED:
            self.dispatch.discard(entry)
        elif entry.state not in (SCHEDULED, WAITING):
            return False
        return True

    # -- chords -------------------------------------------------------------------------

    def hold(self, entry: Entry) -> None:
        """A chord body (or a relay) waits for its parts, some of which may have ended
        already: it is released at once then."""
        if entry.id in self.book.revoked:
            self.end(entry, self.revoked_event(entry, "revoked"))
            return
        entry.state = WAITING
        self.release(entry.id)

    def relay(self, entry: Entry) -> None:
        """The task called ``replace``: its replacement, sent already, carries this task
        as the body of a one-part chord in its last task. The entry waits for that part
        and then ends with its outcome. Its new header is journaled again (not an
        acceptance: a commit that fails keeps it for the next), so that a restart holds
        it as a relay too."""
        # Its own chord's results (a released body that replaced itself) are spent.
        entry.header.pop("chord_results", None)
        entry.header.pop("chord_error", None)
        entry.set_header(chord_size=1, relay=True)
        entry.raw_header = protocol.pack(entry.header)
        self.durable.journal.updated(entry.raw_header, entry.body)
        self.hold(entry)

    def release(self, body_id: str) -> None:
        """Release the held entries of ``body_id`` whose chord is decided: all its parts
        succeeded, or one did not. A relay ends with its part's outcome as its own."""
        chord = self.chords.get(body_id)
        if chord is None:
            return
        for entry in self.book.entries(body_id):
            if entry.state != WAITING:
                continue
            if entry.header.get("relay"):
                event = chord.parts.get(RELAY_INDEX)
                if event is not None:
                    own = dict(event, id=entry.id, name=entry.name, retries=entry.retries)
                    own.pop("copy", None)
                    self.end(entry, own)
                continue
            fields = chord.release(entry.header["chord_size"])
            if fields is not None:
                entry.set_header(**fields)
                self.send_on(entry)

    def count_part(self, part: tuple[str, int], event: dict[str, Any]) -> None:
        """A chord part ended with ``event`` (a failure unless SUCCESS). Parts are counted
        in turn: one counted here may release a body that ends a relay that is a part of
        another chord, and so on."""
        self._ended_parts.append((*part, event))
        if self._counting:
            return
        self._counting = True
        try:
            while self._ended_parts:
                self._count(*self._ended_parts.popleft())
        finally:
            self._counting = False

    def _count(self, body_id: str, index: int, event: dict[str, Any]) -> None:
        """Count a part for a body the router holds (any state: a task may be running
        still when the part its replacement is ends) and release what it decides."""
        entries = self.book.entries(body_id)
        if not entries:
            logger.debug("part %d of chord %s ended; its body is not held here", index,
                         body_id)
            return
        if self.chords.record(body_id, index, event, _size(entries)):
            self.release(body_id)

    def restore_parts(self, parts: list[tuple[str, int, dict[str, Any]]]) -> None:
        """Chord parts the journal held on start, counted again (not journaled again) for
        the bodies tracked; each body is released as it is placed (``hold``)."""
        for body_id, index, event in parts:
            entries = self.book.entries(body_id)
            if entries:
                self.chords.record(body_id, index, event, _size(entries), journal=False)

    def held_parts(self) -> list[tuple[str, int, dict[str, Any]]]:
        """The counted parts of the bodies the router holds (waiting, or released and not
        finished): what a rewrite of the journal keeps."""
        return [(body_id, index, event) for body_id, chord in self.chords.bodies.items()
                if self.book.entries(body_id) for index, event in chord.parts.items()]

    def _forget_parts(self, entry: Entry) -> None:
        """A task retired: if it held the last entry of a body, its parts are forgotten."""
        if entry.id in self.chords and not self.book.entries(entry.id):
            self.chords.forget(entry.id)

    def _ended(self, entry: Entry, event: dict[str, Any],
               part: tuple[str, int] | None) -> None:
        """The chord part a task is (``part``, named by its DONE, before its header's)
        settles with its final event; a RETRY is not an end, its next attempt is."""
        part = part or membership(entry.header)
        state = event.get("state")
        if part is None and state != states.SUCCESS:
            part = chain_membership(entry.header)
        if part is not None and state != states.RETRY:
            self.count_part(part, event)

    # -- events -------------------------------------------------------------------------

    def event(self, entry: Entry, state: str, **extra: Any) -> None:
        """A state change that does not end the task (SENT)."""
        self.events.append(self.state_event(entry, state, **extra))

    def sent(self, entry: Entry, queues: list[str]) -> None:
        """An accepted task: its SENT state (not for a retry, which keeps showing RETRY
        until its next attempt starts, as in Celery, nor for an ignored result), and
        Celery's task-sent."""
        if not entry.header.get("ignore_result") and not entry.retries:
            self.event(entry, states.SENT, queue=",".join(queues), **_relatives(entry.header))
        if self.monitor.on:
            self.monitor.task_sent(entry, ",".join(queues))

    @staticmethod
    def state_event(entry: Entry, state: str, **extra: Any) -> dict[str, Any]:
        if entry.uid != entry.id:
            extra["copy"] = entry.uid
        return protocol.state_event(entry.id, state, retries=entry.retries, name=entry.name,
                                    **extra)

    def failure_event(self, entry: Entry, kind: str, message: str, *,
                      presumed: bool = False) -> dict[str, Any]:
        extra: dict[str, Any] = {"presumed": True} if presumed else {}
        return self.state_event(entry, states.FAILURE, exc=exception_data(kind, message),
                                **extra)

    def revoked_event(self, entry: Entry, why: str) -> dict[str, Any]:
        return self.state_event(entry, states.REVOKED, exc=exception_data(
            "TaskRevokedError", f"task {entry.id} {why}", args=[why]))

    def eventless_event(self, entry: Entry, ignored: bool) -> dict[str, Any]:
        """What a chord counts a part that ended without an event as: a purged task
        REVOKED, one whose DONE carried none IGNORED."""
        if ignored:
            return self.state_event(entry, IGNORED, exc=exception_data(
                "Ignore", f"task {entry.id} ended without a result"))
        return self.state_event(entry, states.REVOKED, exc=exception_data(
            "TaskRevokedError", f"task {entry.id} was purged"))

    # -- dispatch -----------------------------------------------------------------------

    def runnable(self, entry: Entry) -> bool:
        """Whether a connected actor of the entry's queue has its task."""
        return any(entry.queue in actor.queues and actor.runs(entry.name)
                   for actor in self.actors.values() if actor.taking)

    def unknown_task(self, name: str, queue: str) -> bool:
        """Whether actors consume ``queue`` and have said which tasks they have, and none
        has ``name``: a task of it waits until one that has it connects."""
        consumers = [a for a in self.actors.values() if a.taking and queue in a.queues]
        return bool(consumers) and not any(a.runs(name) for a in consumers)

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

        dealt = self.dispatch.round(admit)
        if self.monitor.wants("task-received"):
            for identity, entries in dealt.items():
                actor = self.actors.get(identity)
                if actor is not None:
                    for entry in entries:
                        self.monitor.task_received(entry, actor)
        return dealt

    def undeliverable(self, identity: bytes, entries: list[Entry]) -> None:
        """Tasks that could not be sent to an actor: back to the front of their queues."""
        actor = self.actors.get(identity)
        for entry in reversed(entries):
            if actor is not None:
                actor.release(entry.key)
            self.enqueue(entry, front=True)
        self.actor_lost(identity, "unreachable")

    def claim(self, actor: ActorState, uid: str, retries: int) -> bool:
        """An actor re-announcing after a router restart holds this task: keep it there.
        False when it may not run it: finished, handed to another actor meanwhile, or
        held for its chord's parts."""
        entry = self.book.tasks.get(uid)
        if entry is None or entry.retries != retries or entry.state == WAITING:
            return False
        if entry.state == INFLIGHT:
            return actor.inflight.get(entry.key) is entry
        if entry.state == QUEUED:
            self.dispatch.discard(entry)
        entry.state = INFLIGHT
        actor.inflight[entry.key] = entry
        return True

    # -- lost actors --------------------------------------------------------------------

    def actor_lost(self, identity: bytes, reason: str, error: str | None = None, *,
                   presumed: bool = False, started: tuple[str, int] | None = None,
                   running: bool = True, now: float | None = None) -> None:
        """Celery's rules for the tasks of a dead actor; those it never started go back.

        ``started``: the last task it started, as its supervisor saw (``running``: still
        running then). An actor starts its tasks in the order it got them, so none held
        after that one started, and every one held before it started and ended: their
        DONEs died with the actor or are still on their way. Those wait (the actor is kept
        as departed, ``now``) and are judged as lost only if no DONE comes in time.

        Without that word (the host went silent, or left), the first task held may have
        started, and so may the granted ones right behind it (an actor starts those
        without waiting for the router's confirmation); the rest never started.

        ``presumed``: the actor may still be alive (its host went silent): a FAILURE given
        to a task that may have started gives way to the real outcome reported later."""
        actor = self.actors.pop(identity, None)
        self.dispatch.forget(identity)
        if actor is None:
            return
        logger.warning("actor %s lost (%s) holding %d task(s)", actor.name, reason,
                       len(actor.inflight))
        self.monitor.worker_offline(actor)
        held = list(actor.inflight.values())
        if started is not None:
            keys = [entry.key for entry in held]
            # Not held: its DONE came, and every DONE before it, so nothing held started.
            cut = keys.index(started) + (0 if running else 1) if started in keys else 0
            for entry in held[cut:]:
                actor.release(entry.key)
                if entry.key == started and running:
                    self._running_task_lost(entry, reason, error, presumed, actor)
                else:
                    self.requeue(entry, redelivered=False)
            if actor.inflight and now is not None:
                actor.credit, actor.departed_at = 0, now
                self.actors[identity] = actor
                return
            held = list(actor.inflight.values())
        maybe = True
        for position, entry in enumerate(held):
            maybe = maybe and (position == 0 or entry.key in actor.granted)
            if maybe:
                self._running_task_lost(entry, reason, error if position == 0 else None,
                                        presumed or position > 0, actor)
            else:
                self.requeue(entry, redelivered=False)

    def _running_task_lost(self, entry: Entry, reason: str, error: str | None,
                           presumed: bool, actor: ActorState) -> None:
        if entry.id in self.book.revoked:
            self.end(entry, self.revoked_event(entry, "revoked and terminated"), by=actor)
            return
        if error == "TimeLimitExceeded":
            limit = entry.header.get("time_limit")
            self.fail(entry, "TimeLimitExceeded",
                      f"TimeLimitExceeded({limit if limit is not None else ''}): the task "
                      f"ran past its hard time limit and its process was killed", by=actor)
            return
        late = entry.acks_late and entry.header.get("reject_on_worker_lost") is not False
        limit = self.redelivery_limit(entry)
        if late and entry.redeliveries < limit:
            self.requeue(entry, redelivered=True)
        elif late:
            self.fail(entry, "WorkerLostError",
                      f"Worker exited prematurely ({reason}); the task was redelivered "
                      f"{entry.redeliveries} times (max_redeliveries={limit}) and is "
                      f"not tried again", presumed=presumed, by=actor)
        else:
            self.fail(entry, "WorkerLostError", f"Worker exited prematurely: {reason}",
                      presumed=presumed, by=actor)


def _size(entries: list[Entry]) -> int | None:
    """How many parts a body's entries wait for, or None while none is a chord body."""
    for entry in entries:
        size = entry.header.get("chord_size")
        if size is not None:
            return int(size)
    return None


def _relatives(header: dict[str, Any]) -> dict[str, Any]:
    """Who a task's relatives are, as its header says, for the state it is SENT with
    (monitors show them): the task that sent it and the first of that line, its group,
    and the chord body it is a part of."""
    found = {key: header[key] for key in ("parent_id", "root_id", "group_id")
             if isinstance(header.get(key), str)}
    chord = header.get("chord")
    if isinstance(chord, list) and chord and isinstance(chord[0], str):
        found["chord_id"] = chord[0]
    return found
