"""The router client: one DEALER to the router, for sending tasks and requests (the
results client, :mod:`zq.results_client`, holds the socket to the results actor).

Each thread of each process gets its own (ZeroMQ sockets are not thread-safe, and a
forked child must not reuse its parent's). Requests are matched to replies by task id or
by a request id, so a late reply to an earlier, timed-out request is skipped, not mistaken.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import zmq

from . import protocol
from ._client_sockets import RESEND_AFTER_S, connected, immediate, ms, readable, send_within
from .errors import NoRoute, ProtocolError, PublishError, QueueFull
from .errors import TimeoutError as ZqTimeoutError
from .protocol import Cmd, Message
from .security import ClientKeys
from .utils import Readable, new_id

logger = logging.getLogger("zq.client")

_ERRORS: dict[str, type[PublishError]] = {"QueueFull": QueueFull, "NoRoute": NoRoute}

# Refusals of tasks published without waiting, kept until asked for (the oldest dropped).
_REFUSED_KEPT = 100_000


class _NoAnswer(Exception):
    """No answer came; ``sent`` says whether the message left this client at all."""

    def __init__(self, sent: bool) -> None:
        super().__init__()
        self.sent = sent


def reach_router(ctx: zmq.Context[Any], endpoint: str, keys: ClientKeys | None,
                 timeout_s: float) -> None:
    """Return once a connection to a router at ``endpoint`` is up (its handshake done,
    CURVE's included); a :class:`PublishError` when none is within ``timeout_s``.

    A router that is up completes a connection within milliseconds, however busy its
    loop (libzmq's I/O thread does it), so a command line can say at once that nobody
    answers instead of waiting out a request's whole timeout.
    """
    sock = connected(ctx, zmq.DEALER, endpoint, keys, before_connect=immediate)
    try:
        # With ZMQ_IMMEDIATE a DEALER is writable only once a connection is complete.
        if sock.poll(ms(timeout_s), zmq.POLLOUT):
            return
    finally:
        sock.close(linger=0)
    hint = (" (or it refused this client's CURVE keys)" if keys is not None else "")
    raise PublishError(f"no router answers at {endpoint} within {timeout_s:g}s{hint}: is "
                       f"`zq router` running there?", outcome="not sent")


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
        sock = connected(self._ctx, zmq.DEALER, self.endpoint, self._keys,
                       before_connect=immediate)
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
        if not send_within(self._sock, msg, timeout_s):
            raise _NoAnswer(sent=False)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._answered.wait(ms(remaining)):
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
                self._collect(min(remaining, RESEND_AFTER_S))
        now = time.monotonic()
        msg = Message(Cmd.PUBLISH, header, body)
        pending = _Unconfirmed(msg, now + timeout_s, timeout_s)
        self._try_send(pending, now)
        if not pending.sent:
            # No connection is up (a new socket, the router away): wait for one, as a
            # waiting send does, so that what returns is on its way.
            if not send_within(self._sock, msg, timeout_s):
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
                self._collect(RESEND_AFTER_S if remaining is None
                              else min(remaining, RESEND_AFTER_S))
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
            self._collect(RESEND_AFTER_S if remaining is None
                          else min(remaining, RESEND_AFTER_S))

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
        if readable(sock) or (timeout_s > 0 and self._answered.wait(ms(timeout_s))):
            while readable(sock):
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
        """Send again what has waited ``RESEND_AFTER_S`` (or never left); give up what
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
            elif not pending.sent or now - pending.last_sent >= RESEND_AFTER_S:
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
                                      max(min(RESEND_AFTER_S, deadline - time.monotonic()), 0))
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
