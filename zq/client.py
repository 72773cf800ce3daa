"""The sockets a client holds: one DEALER to the router, one to the results actor.

Each thread of each process gets its own (ZeroMQ sockets are not thread-safe, and a
forked child must not reuse its parent's). Requests are matched to replies by task id or
by a request id, so a late reply to an earlier, timed-out request is skipped, not mistaken.
"""

from __future__ import annotations

import itertools
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import zmq

from . import protocol, states, watch
from .errors import ConfigurationError, NoRoute, ProtocolError, PublishError, QueueFull
from .errors import TimeoutError as ZqTimeoutError
from .protocol import Cmd, Message
from .security import ClientKeys, secure_client
from .utils import Readable, Reconnections, new_id, reachable

logger = logging.getLogger("zq.client")

_ERRORS: dict[str, type[PublishError]] = {"QueueFull": QueueFull, "NoRoute": NoRoute}

# How long one send waits for the router's answer before it is sent again.
_RESEND_AFTER_S = 2.0
# A WAIT lasts twice this long at the results actor (which ends it unanswered after at
# most 30 s); the client renews it, which also carries waiters across a restart of the
# results actor.
_WAIT_RENEW_S = 10.0
# A task the router was asked to send the result of, and has not, is waited for at the
# results actor too after this long; and a waiting get() wakes this often to check.
_ROUTER_WAIT_S = 1.0
_PUMP_S = 0.25
# Refusals of tasks published without waiting, kept until asked for (the oldest dropped).
_REFUSED_KEPT = 100_000
# Ready results kept for AsyncResults other than the one that asked.
_READY_CACHE = 10_000
# The waits a client keeps at the results actor at once (and so the most ids in one
# WAIT): half of what it lets one peer hold (10,000), which leaves room for the waits it
# still holds for results this client asked for and no longer tracks.
_MAX_WAITS = 5_000
# Queries to the results actor that can be sent again until answered: the results actor
# drops answers to a peer that has too many unread (a client busy elsewhere).
_RESENT_QUERIES = frozenset({Cmd.GET, Cmd.SNAPSHOT, Cmd.FORGET})
# Tasks whose last version a watcher remembers, to spot events it missed.


def _ms(seconds: float) -> int:
    """A poll timeout: ZeroMQ counts whole milliseconds."""
    return int(seconds * 1000)


class _NoAnswer(Exception):
    """No answer came; ``sent`` says whether the message left this client at all."""

    def __init__(self, sent: bool) -> None:
        super().__init__()
        self.sent = sent


class Pending(Protocol):
    """A result a client waits for (an ``AsyncResult``): told its state once it is ready."""

    @property
    def id(self) -> str: ...

    def set_meta(self, meta: dict[str, Any]) -> None: ...


def _socket(ctx: zmq.Context[Any], kind: int, endpoint: str,
            keys: ClientKeys | None = None,
            before_connect: Callable[[zmq.Socket[Any]], Any] | None = None,
            ) -> zmq.Socket[Any]:
    """A connected socket; ``before_connect`` is given it first (to attach a monitor)."""
    sock: zmq.Socket[Any] = ctx.socket(kind)
    sock.linger = 0
    secure_client(sock, keys)
    if before_connect is not None:
        before_connect(sock)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        raise ConfigurationError(f"cannot connect to {endpoint!r}: {exc}") from exc
    return sock


def _readable(sock: zmq.Socket[Any]) -> bool:
    """Whether a message waits on ``sock`` (no poll, no exception)."""
    return bool(int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


def _immediate(sock: zmq.Socket[Any]) -> None:
    """Queue messages only on a connection that is up (ZMQ_IMMEDIATE).

    Otherwise a DEALER keeps what is sent while the router is down and delivers it when
    the router comes back, however long after the caller gave up on it. With this option
    a send that cannot go out fails, so the client knows the message never left.
    """
    sock.immediate = True


def reach_router(ctx: zmq.Context[Any], endpoint: str, keys: ClientKeys | None,
                 timeout_s: float) -> None:
    """Return once a connection to a router at ``endpoint`` is up (its handshake done,
    CURVE's included); a :class:`PublishError` when none is within ``timeout_s``.

    A router that is up completes a connection within milliseconds, however busy its
    loop (libzmq's I/O thread does it), so a command line can say at once that nobody
    answers instead of waiting out a request's whole timeout.
    """
    sock = _socket(ctx, zmq.DEALER, endpoint, keys, before_connect=_immediate)
    try:
        # With ZMQ_IMMEDIATE a DEALER is writable only once a connection is complete.
        if sock.poll(_ms(timeout_s), zmq.POLLOUT):
            return
    finally:
        sock.close(linger=0)
    hint = (" (or it refused this client's CURVE keys)" if keys is not None else "")
    raise PublishError(f"no router answers at {endpoint} within {timeout_s:g}s{hint}: is "
                       f"`zq router` running there?", outcome="not sent")


def _send_within(sock: zmq.Socket[Any], msg: Message, timeout_s: float) -> bool:
    """Send unless no peer can take it within ``timeout_s``.

    A DEALER with no peer to take the message (the router down with ``immediate`` set,
    a CURVE handshake refused, a full queue) blocks in send; this waits for room instead,
    within the caller's deadline. False means the message was not queued.
    """
    try:
        protocol.send(sock, msg, flags=zmq.NOBLOCK)
        return True
    except zmq.Again:
        pass
    if not sock.poll(_ms(timeout_s), zmq.POLLOUT):
        return False
    try:
        protocol.send(sock, msg, flags=zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


class _Unconfirmed:
    """A task published without waiting, until the router confirms it."""

    __slots__ = ("msg", "deadline", "timeout_s", "sent", "last_sent")

    def __init__(self, msg: Message, deadline: float, timeout_s: float):
        self.msg = msg
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.sent = False
        self.last_sent = 0.0


class RouterClient:
    """Submits tasks and control requests to the router and waits for its answers.

    A request that gets no answer in time is given up for good: the socket is closed with
    whatever it still queues and a new one (a new identity) takes the next request, so
    nothing the caller was told failed reaches the router later.
    """

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, keys: ClientKeys | None = None,
                 window: int = 1000):
        self.endpoint = endpoint
        self._ctx = ctx
        self._keys = keys
        self._sock, self._answered = self._connect()
        self._rids = itertools.count(1)
        # Tasks sent without waiting (``publish``) and not confirmed yet, oldest first;
        # at most ``window`` of them: a sender with a full window waits.
        self.window = window
        self.unconfirmed: OrderedDict[str, _Unconfirmed] = OrderedDict()
        # Why the router refused (or never confirmed) a task sent so, by id, until asked.
        self.refused: OrderedDict[str, PublishError] = OrderedDict()
        self._next_check = 0.0
        # Refused since the last flush (which raises about them).
        self._unreported: list[str] = []
        # Takes the final states (and ``elsewhere`` answers) of tasks this client waits
        # for here (see ``wait_for``): the results client of the same thread.
        self.on_states: Callable[[Message], None] | None = None

    def _connect(self) -> tuple[zmq.Socket[Any], Readable]:
        sock = _socket(self._ctx, zmq.DEALER, self.endpoint, self._keys,
                       before_connect=_immediate)
        return sock, Readable(sock)

    def close(self) -> None:
        self._sock.close(linger=0)

    @property
    def socket(self) -> zmq.Socket[Any]:
        return self._sock

    def wait_for(self, ids: list[str]) -> bool:
        """Ask the router to send the final states of these tasks here as they end (see
        zq.router.waiting); False when it cannot be asked now."""
        try:
            protocol.send(self._sock, Message(Cmd.WAIT, {"ids": ids}), flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def poll_answers(self) -> None:
        """Take the answers that arrived, and send again what is due."""
        self._collect(0)

    def _exchange(self, msg: Message, key: str, value: Any, timeout_s: float) -> Message:
        """Send ``msg`` and return the first answer whose ``key`` equals ``value`` (or,
        for ``id``, an ACCEPTED whose ``ids`` hold it). Answers about tasks published
        without waiting are taken note of on the way."""
        deadline = time.monotonic() + timeout_s
        if not _send_within(self._sock, msg, timeout_s):
            raise _NoAnswer(sent=False)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._answered.wait(_ms(remaining)):
                raise _NoAnswer(sent=True)
            reply = self._recv()
            if reply is None:
                continue
            if reply.header.get(key) == value or (
                    key == "id" and value in (reply.header.get("ids") or ())):
                return reply
            self._note(reply)

    def _recv(self) -> Message | None:
        try:
            _, reply = protocol.recv(self._sock)
        except ProtocolError as exc:
            logger.warning("dropping malformed message from router: %s", exc)
            return None
        return reply

    # -- tasks sent without waiting for each answer -------------------------------------

    def publish(self, header: dict[str, Any], body: bytes, timeout_s: float) -> None:
        """Send a task and return at once; the router's confirmation is collected later
        (here, by :meth:`confirmed` and :meth:`flush`). Waits while ``window`` tasks are
        unconfirmed. A task not confirmed within ``timeout_s`` is sent again (the router
        drops a task id it holds) until then, and is then given up with the same error a
        waiting send raises, kept for whoever asks about it."""
        self._collect(0)
        if len(self.unconfirmed) >= self.window:
            deadline = time.monotonic() + timeout_s
            while len(self.unconfirmed) >= self.window:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PublishError(f"task {header['id']} was NOT sent: {self.window} "
                                       f"tasks sent before it are still unconfirmed by the "
                                       f"router at {self.endpoint} after {timeout_s:g}s",
                                       outcome="not sent")
                self._collect(min(remaining, _RESEND_AFTER_S))
        now = time.monotonic()
        msg = Message(Cmd.PUBLISH, header, body)
        pending = _Unconfirmed(msg, now + timeout_s, timeout_s)
        self._try_send(pending, now)
        if not pending.sent:
            # No connection is up (a new socket, the router away): wait for one, as a
            # waiting send does, so that what returns is on its way.
            if not _send_within(self._sock, msg, timeout_s):
                raise self._unanswered(f"task {header['id']}", False, timeout_s)
            pending.sent = True
            pending.last_sent = now
        self.unconfirmed[header["id"]] = pending

    def confirmed(self, task_id: str, timeout_s: float | None) -> None:
        """Return once the router confirmed ``task_id`` (at once for a task this client
        did not publish without waiting); raise what refused it."""
        if task_id in self.unconfirmed:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while task_id in self.unconfirmed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ZqTimeoutError(f"task {task_id} not confirmed by the router "
                                         f"within {timeout_s:g}s")
                self._collect(_RESEND_AFTER_S if remaining is None
                              else min(remaining, _RESEND_AFTER_S))
        error = self.refused.get(task_id)
        if error is not None:
            raise error

    def settle(self, timeout_s: float | None, *, quiet: bool = False) -> None:
        """Wait until every task published is confirmed or given up (refusals are kept,
        each for its own task); ``quiet``: return at the timeout instead of raising."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.unconfirmed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if quiet:
                    return
                raise ZqTimeoutError(f"{len(self.unconfirmed)} tasks not confirmed by the "
                                     f"router within {timeout_s:g}s")
            self._collect(_RESEND_AFTER_S if remaining is None
                          else min(remaining, _RESEND_AFTER_S))

    def flush(self, timeout_s: float | None) -> None:
        """Wait until every task published is confirmed; raise the first refusal since
        the last flush (each stays to be asked about by its task's id too)."""
        self.settle(timeout_s)
        if self._unreported:
            first, count = self._unreported[0], len(self._unreported)
            self._unreported.clear()
            error = self.refused.get(first) or PublishError(f"task {first} was refused")
            more = f" (and {count - 1} more)" if count > 1 else ""
            raise type(error)(f"{error}{more}", outcome=error.outcome)

    def _collect(self, timeout_s: float) -> None:
        """Take every answer there is (waiting up to ``timeout_s`` for the first), then
        send again what is due and give up what is past its time."""
        sock = self._sock
        if _readable(sock) or (timeout_s > 0 and self._answered.wait(_ms(timeout_s))):
            while _readable(sock):
                reply = self._recv()
                if reply is not None:
                    self._note(reply)
        if self.unconfirmed:
            self._resend_due(time.monotonic())

    def _note(self, reply: Message) -> None:
        """An answer about tasks published without waiting: confirmed, or refused."""
        header = reply.header
        if reply.cmd is Cmd.ACCEPTED:
            for task_id in header.get("ids") or ([header["id"]] if "id" in header else ()):
                self.unconfirmed.pop(task_id, None)
            for item in header.get("warnings") or ():
                if isinstance(item, list) and len(item) == 2:
                    logger.warning("task %s: %s", item[0], item[1])
            for item in header.get("errors") or ():
                if isinstance(item, list) and len(item) == 3:
                    self._refuse(item[0], _ERRORS.get(item[1], PublishError)(
                        f"task {item[0]}: {item[2]}"))
        elif reply.cmd is Cmd.ERROR and header.get("id") in self.unconfirmed:
            self._refuse(header["id"], _ERRORS.get(header.get("error", ""), PublishError)(
                header.get("message", "the router refused the task")))
        elif reply.cmd is Cmd.STATES:
            # A task that ended was accepted: its final state stands for its ACCEPTED.
            for meta in header.get("states") or ():
                if isinstance(meta, dict):
                    self.unconfirmed.pop(meta.get("id"), None)  # type: ignore[arg-type]
            if self.on_states is not None:
                self.on_states(reply)

    def _refuse(self, task_id: Any, error: PublishError) -> None:
        if self.unconfirmed.pop(task_id, None) is None:
            return
        self.refused[task_id] = error
        self._unreported.append(task_id)
        while len(self.refused) > _REFUSED_KEPT:
            self.refused.popitem(last=False)
        del self._unreported[:-_REFUSED_KEPT]

    def _try_send(self, pending: _Unconfirmed, now: float) -> None:
        try:
            protocol.send(self._sock, pending.msg, flags=zmq.NOBLOCK)
        except zmq.Again:
            return  # no connection up (ZMQ_IMMEDIATE): sent again when due
        pending.sent = True
        pending.last_sent = now

    def _resend_due(self, now: float) -> None:
        """Send again what has waited ``_RESEND_AFTER_S`` (or never left); give up what
        is past its time, as a waiting send would. Looked at ten times a second."""
        if now < self._next_check:
            return
        self._next_check = now + 0.1
        for task_id, pending in list(self.unconfirmed.items()):
            if now >= pending.deadline:
                error = self._unanswered(f"task {task_id}", pending.sent, pending.timeout_s)
                if pending.sent:
                    error = PublishError(f"{error}; sending it again with task_id="
                                         f"{task_id!r} is safe: the router drops a task id "
                                         f"it already holds", outcome="unknown")
                self._refuse(task_id, error)
            elif not pending.sent or now - pending.last_sent >= _RESEND_AFTER_S:
                self._try_send(pending, now)

    def _request(self, msg: Message, key: str, value: Any, timeout_s: float) -> Message:
        """Like ``_exchange``, sending again until ``timeout_s`` when no answer comes.

        Sending again is safe: the router recognizes a task id it has accepted already.
        Raises ``_NoAnswer`` once the time is up, after dropping the socket with what it
        still queues.
        """
        deadline = time.monotonic() + timeout_s
        sent = False
        while True:
            try:
                return self._exchange(msg, key, value,
                                      max(min(_RESEND_AFTER_S, deadline - time.monotonic()), 0))
            except _NoAnswer as exc:
                sent = sent or exc.sent
            if time.monotonic() >= deadline:
                break
        self._reset()
        raise _NoAnswer(sent)

    def _reset(self) -> None:
        """Replace the socket, dropping every message it still holds: linger 0 discards
        them, and the new socket is a new peer to the router, so no late answer or queued
        resend of the old one can be mistaken for the next request's."""
        self._sock.close(linger=0)
        self._sock, self._answered = self._connect()

    def _unanswered(self, what: str, sent: bool, timeout_s: float) -> PublishError:
        """The error for a request given up on: sent or not, in words a caller can act on."""
        if not sent:
            return PublishError(f"{what} was NOT sent: no answer from the router at "
                                f"{self.endpoint} within {timeout_s:g}s (it could not be "
                                f"reached); nothing was queued to be sent later",
                                outcome="not sent")
        return PublishError(f"{what}: outcome unknown: no answer from the router at "
                            f"{self.endpoint} within {timeout_s:g}s after it was sent; "
                            f"it may have been accepted", outcome="unknown")

    def submit(self, header: dict[str, Any], body: bytes, timeout_s: float) -> None:
        task_id = header["id"]
        try:
            reply = self._request(Message(Cmd.SUBMIT, header, body), "id", task_id, timeout_s)
        except _NoAnswer as exc:
            error = self._unanswered(f"task {task_id}", exc.sent, timeout_s)
            if exc.sent:
                error = PublishError(f"{error}; sending it again with task_id={task_id!r} "
                                     f"is safe: the router drops a task id it already holds",
                                     outcome="unknown")
            raise error from None
        if reply.cmd is Cmd.ERROR:
            raise _ERRORS.get(reply.header.get("error", ""), PublishError)(
                reply.header.get("message", "the router refused the task"))

    def submit_many(self, items: list[tuple[dict[str, Any], bytes]], timeout_s: float) -> None:
        """Submit tasks in one message; raises for the first one the router refused."""
        batch_id = new_id()
        tasks = [[protocol.pack(header), body] for header, body in items]
        try:
            reply = self._request(Message(Cmd.SUBMIT, {"id": batch_id, "tasks": tasks}),
                                  "id", batch_id, timeout_s)
        except _NoAnswer as exc:
            ids = [header["id"] for header, _ in items]
            named = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            error = self._unanswered(f"{len(ids)} tasks ({named})", exc.sent, timeout_s)
            if exc.sent:
                error = PublishError(f"{error}; sending them again with the same task ids "
                                     f"is safe: the router drops a task id it already holds",
                                     outcome="unknown")
            raise error from None
        if reply.cmd is Cmd.ERROR:
            raise PublishError(reply.header.get("message", "the router refused the tasks"))
        errors = reply.header.get("errors") or []
        if errors:
            task_id, kind, message = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise _ERRORS.get(kind, PublishError)(f"task {task_id}: {message}{more}")

    def call(self, cmd: Cmd, header: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """A control or hello request; returns the reply header."""
        rid = next(self._rids)
        try:
            reply = self._request(Message(cmd, {**header, "rid": rid}), "rid", rid, timeout_s)
        except _NoAnswer as exc:
            what = f"{cmd.value} {header['op']}" if "op" in header else cmd.value
            raise self._unanswered(f"the request {what}", exc.sent, timeout_s) from None
        if reply.cmd is Cmd.ERROR:
            raise PublishError(reply.header.get("message", "the router refused the request"))
        return reply.header


class ResultsClient:
    """Asks the results actor for states and waits for results it pushes."""

    def __init__(self, ctx: zmq.Context[Any], endpoints: dict[str, str], router: str,
                 pending: weakref.WeakValueDictionary[str, Pending],
                 keys: ClientKeys | None = None, router_client: RouterClient | None = None):
        self.query_endpoint = reachable(endpoints["query"], router)
        self.pub_endpoint = reachable(endpoints["pub"], router)
        self._ctx = ctx
        self._keys = keys
        # A handshake after the first means the results actor came back (restarted): the
        # waits it held are gone, so they are sent again at once, not at the next renewal.
        watched: list[Reconnections] = []
        try:
            self._sock = _socket(ctx, zmq.DEALER, self.query_endpoint, keys,
                                 before_connect=lambda s: watched.append(Reconnections(s)))
        except ConfigurationError:
            for reconnections in watched:
                reconnections.socket.close(linger=0)
            raise
        (self._reconnections,) = watched
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._reconnections.socket, zmq.POLLIN)
        self._rids = itertools.count(1)
        self._pending = pending
        self._asked: dict[str, float] = {}
        self._ready: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._replies: dict[int, dict[str, Any]] = {}
        self._awaited: set[int] = set()  # the rids of requests not answered yet
        # The router of the same thread: asked first for what this client waits for (it
        # sends a task's final state the moment the task ends, see zq.router.waiting).
        self._router = router_client
        self._router_sock: zmq.Socket[Any] | None = None
        self._asked_router: dict[str, float] = {}
        # Ids the router does not hold: asked of the results actor at once.
        self._elsewhere: set[str] = set()
        if router_client is not None:
            router_client.on_states = self._from_router

    def close(self) -> None:
        self._reconnections.close()
        self._sock.close(linger=0)

    def track(self, result: Pending) -> None:
        """Remember ``result`` so that its state is kept when it arrives with others."""
        self._pending[result.id] = result

    def _handle(self, msg: Message) -> None:
        if msg.cmd is not Cmd.STATES:
            if msg.cmd is Cmd.ERROR:
                logger.warning("results actor: %s", msg.header.get("message"))
                if msg.header.get("rid") in self._awaited:
                    self._replies[msg.header["rid"]] = msg.header
            return
        if "rid" in msg.header:
            # A second answer to a request sent twice, or a late one, is dropped.
            if msg.header["rid"] in self._awaited:
                self._replies[msg.header["rid"]] = msg.header
            return
        for meta in msg.header.get("states", ()):
            task_id = meta.get("id")
            if not isinstance(task_id, str) or meta.get("state") not in states.READY_STATES:
                continue
            self._asked.pop(task_id, None)
            result = self._pending.pop(task_id, None)
            if result is not None:
                result.set_meta(meta)
            self._ready[task_id] = meta
            if len(self._ready) > _READY_CACHE:
                self._ready.popitem(last=False)

    def _from_router(self, msg: Message) -> None:
        """Final states the router sent, and the ids it does not hold."""
        elsewhere = msg.header.get("elsewhere")
        if isinstance(elsewhere, list):
            self._elsewhere.update(i for i in elsewhere if isinstance(i, str))
            if len(self._elsewhere) > 4 * _MAX_WAITS:
                self._elsewhere = {i for i in self._elsewhere if i in self._pending}
        if isinstance(msg.header.get("states"), list):
            self._handle(Message(Cmd.STATES, {"states": msg.header["states"]}))

    def _watch_router(self) -> None:
        """Poll the router socket of this thread too (it is made anew after a request
        the router never answered)."""
        sock = None if self._router is None else self._router.socket
        if sock is not self._router_sock:
            if self._router_sock is not None:
                try:
                    self._poller.unregister(self._router_sock)
                except KeyError:
                    pass
            if sock is not None:
                self._poller.register(sock, zmq.POLLIN)
            self._router_sock = sock

    def _pump(self, timeout_s: float) -> bool:
        """Handle what arrives within ``timeout_s``; False when nothing did."""
        self._watch_router()
        ready = dict(self._poller.poll(_ms(max(timeout_s, 0))))
        if self._router is not None:
            # Answers from the router (results among them), and resends that are due.
            self._router.poll_answers()
        if not ready:
            return False
        if self._reconnections.socket in ready and self._reconnections.came_back():
            logger.info("reconnected to the results actor; asking again for %d results",
                        len(self._asked))
            self._asked.clear()
        if self._sock in ready:
            for _, msg in protocol.drain(self._sock):
                self._handle(msg)
        return True

    def request(self, cmd: Cmd, header: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send a query and return its answer; a GET, SNAPSHOT or FORGET is sent again
        every ``_RESEND_AFTER_S`` until answered (the first answer counts)."""
        rid = next(self._rids)
        msg = Message(cmd, {**header, "rid": rid})
        deadline = time.monotonic() + timeout_s
        if not _send_within(self._sock, msg, timeout_s):
            raise ZqTimeoutError(f"the results actor at {self.query_endpoint} cannot be "
                                 f"reached within {timeout_s:g}s")
        resend_at = time.monotonic() + _RESEND_AFTER_S if cmd in _RESENT_QUERIES else None
        self._awaited.add(rid)
        try:
            while rid not in self._replies:
                now = time.monotonic()
                if now >= deadline:
                    raise ZqTimeoutError(f"the results actor at {self.query_endpoint} did "
                                         f"not answer within {timeout_s:g}s")
                if resend_at is not None and now >= resend_at:
                    _send_within(self._sock, msg, 0)
                    resend_at = now + _RESEND_AFTER_S
                self._pump(min(deadline, resend_at or deadline) - now)
        finally:
            self._awaited.discard(rid)
        reply = self._replies.pop(rid)
        if "error" in reply:
            raise PublishError(reply.get("message", "the results actor refused the request"))
        return reply

    def get(self, ids: list[str], timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The current state of each of ``ids``; a final one this client was sent is not
        asked for again."""
        known = {i: self._ready[i] for i in ids if i in self._ready}
        if len(known) == len(ids):
            return [known[i] for i in ids]
        asked = [i for i in ids if i not in known]
        found = iter(self.request(Cmd.GET, {"ids": asked}, timeout_s)["states"])
        return [known[i] if i in known else next(found) for i in ids]

    def forget(self, ids: list[str], timeout_s: float = 10.0) -> None:
        self.request(Cmd.FORGET, {"ids": ids}, timeout_s)
        for task_id in ids:
            self._ready.pop(task_id, None)

    def emit(self, events: list[dict[str, Any]], timeout_s: float = 10.0) -> None:
        self.request(Cmd.EVENTS, {"events": events}, timeout_s)

    def snapshot(self, ids: list[str] | None, timeout_s: float = 10.0) -> dict[str, Any]:
        return self.request(Cmd.SNAPSHOT, {"ids": ids}, timeout_s)

    def wait(self, task_id: str, timeout_s: float | None,
             also: list[str] | None = None) -> dict[str, Any]:
        """Block until ``task_id`` is ready; returns its final state.

        The router is asked first (on this thread's router socket, right behind the
        tasks sent on it): it sends the final state of a task it holds the moment the
        task ends. What it does not hold, and what it has not answered within
        ``_ROUTER_WAIT_S``, is asked of the results actor. One WAIT covers every tracked
        result not yet asked for, so collecting many results costs one request each way.
        A refusal by the router of a task sent without waiting is raised here, and so is
        one of the tasks ``also`` names (the earlier links of its chain).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            meta = self._ready.get(task_id)
            if meta is not None:
                return meta
            if self._router is not None:
                for refused_id in (task_id, *(also or ())):
                    error = self._router.refused.get(refused_id)
                    if error is not None:
                        raise error
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise ZqTimeoutError(f"task {task_id} not ready within {timeout_s:g}s")
            self._ask_router(task_id, now)
            if self._due_at_results(task_id, now):
                self._send_wait(task_id, now)
            slice_s = _PUMP_S if deadline is None else min(_PUMP_S, deadline - now)
            self._pump(slice_s)

    def _ask_router(self, task_id: str, now: float) -> None:
        if self._router is None:
            return
        stale = now - _WAIT_RENEW_S
        if self._asked_router.get(task_id, -_WAIT_RENEW_S * 2) > stale:
            return
        ids = [task_id]
        for other in self._pending.keys():
            if len(ids) >= _MAX_WAITS:
                break
            if other != task_id and other not in self._ready \
                    and self._asked_router.get(other, -_WAIT_RENEW_S * 2) <= stale:
                ids.append(other)
        if self._router.wait_for(ids):
            for asked in ids:
                self._asked_router[asked] = now
            if len(self._asked_router) > 4 * _MAX_WAITS:
                self._asked_router = {k: v for k, v in self._asked_router.items()
                                      if v > stale}

    def _due_at_results(self, task_id: str, now: float) -> bool:
        """Whether to wait for ``task_id`` at the results actor too: the router does not
        hold it, or has not answered for a while (it restarted and forgot its waiters,
        its journal cannot be written), or there is no router socket to ask."""
        if self._router is None or task_id in self._elsewhere:
            return True
        asked = self._asked_router.get(task_id)
        return asked is None or now - asked >= _ROUTER_WAIT_S

    def _send_wait(self, task_id: str, now: float) -> None:
        stale = now - _WAIT_RENEW_S
        if self._asked.get(task_id, 0.0) > stale:
            return
        ids = [task_id]
        room = _MAX_WAITS - 1 - sum(1 for asked in self._asked.values() if asked > stale)
        for other in self._pending.keys():
            if len(ids) > room:
                break
            if other != task_id and self._asked.get(other, 0.0) <= stale \
                    and self._due_at_results(other, now):
                ids.append(other)
        for asked in ids:
            self._asked[asked] = now
            self._elsewhere.discard(asked)
        if len(self._asked) > 4 * _MAX_WAITS:
            self._asked = {k: v for k, v in self._asked.items() if v > stale}
        _send_within(self._sock, Message(Cmd.WAIT, {"ids": ids, "timeout_s": _WAIT_RENEW_S * 2}),
                     _WAIT_RENEW_S)

    def subscriber(self) -> zmq.Socket[Any]:
        """A SUB socket to the results actor's stream (the caller closes it)."""
        return _socket(self._ctx, zmq.SUB, self.pub_endpoint, self._keys)

    def watch(self, ids: list[str] | None, timeout_s: float | None = None,
              ) -> Iterator[dict[str, Any]]:
        """Yield the current state of what is watched, then every change in order."""
        return watch.watch(self, ids, timeout_s)
