"""The results client: asks the results actor for states, and waits for results.

A ``get()`` asks the router first (on its own thread's router socket, see
:mod:`zq.router.waiting`), and the results actor for what the router does not hold.
"""

from __future__ import annotations

import itertools
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Protocol

import zmq

from . import protocol, states, watch
from ._client_sockets import RESEND_AFTER_S, connected, ms, send_within
from .client import RouterClient
from .errors import ConfigurationError, PublishError
from .errors import TimeoutError as ZqTimeoutError
from .protocol import Cmd, Message
from .security import ClientKeys
from .utils import Reconnections, reachable

logger = logging.getLogger("zq.client")

# A WAIT lasts twice this long at the results actor (which ends it unanswered after at
# most 30 s); the client renews it, which also carries waiters across a restart of the
# results actor.
_WAIT_RENEW_S = 10.0
# A task the router was asked to send the result of, and has not, is waited for at the
# results actor too after this long; and a waiting get() wakes this often to check.
_ROUTER_WAIT_S = 1.0
_PUMP_S = 0.25
# Ready results kept for AsyncResults other than the one that asked.
_READY_CACHE = 10_000
# The waits a client keeps at the results actor at once (and so the most ids in one
# WAIT): half of what it lets one peer hold (10,000), which leaves room for the waits it
# still holds for results this client asked for and no longer tracks.
_MAX_WAITS = 5_000
# Queries to the results actor that can be sent again until answered: the results actor
# drops answers to a peer that has too many unread (a client busy elsewhere).
_RESENT_QUERIES = frozenset({Cmd.GET, Cmd.SNAPSHOT, Cmd.FORGET})


class Pending(Protocol):
    """A result a client waits for (an ``AsyncResult``): told its state once it is ready."""

    @property
    def id(self) -> str: ...

    def set_meta(self, meta: dict[str, Any]) -> None: ...


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
            self._sock = connected(ctx, zmq.DEALER, self.query_endpoint, keys,
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
        ready = dict(self._poller.poll(ms(max(timeout_s, 0))))
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
        every ``RESEND_AFTER_S`` until answered (the first answer counts)."""
        rid = next(self._rids)
        msg = Message(cmd, {**header, "rid": rid})
        deadline = time.monotonic() + timeout_s
        if not send_within(self._sock, msg, timeout_s):
            raise ZqTimeoutError(f"the results actor at {self.query_endpoint} cannot be "
                                 f"reached within {timeout_s:g}s")
        resend_at = time.monotonic() + RESEND_AFTER_S if cmd in _RESENT_QUERIES else None
        self._awaited.add(rid)
        try:
            while rid not in self._replies:
                now = time.monotonic()
                if now >= deadline:
                    raise ZqTimeoutError(f"the results actor at {self.query_endpoint} did "
                                         f"not answer within {timeout_s:g}s")
                if resend_at is not None and now >= resend_at:
                    send_within(self._sock, msg, 0)
                    resend_at = now + RESEND_AFTER_S
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
        send_within(self._sock, Message(Cmd.WAIT, {"ids": ids, "timeout_s": _WAIT_RENEW_S * 2}),
                     _WAIT_RENEW_S)

    def subscriber(self) -> zmq.Socket[Any]:
        """A SUB socket to the results actor's stream (the caller closes it)."""
        return connected(self._ctx, zmq.SUB, self.pub_endpoint, self._keys)

    def watch(self, ids: list[str] | None, timeout_s: float | None = None,
              ) -> Iterator[dict[str, Any]]:
        """Yield the current state of what is watched, then every change in order."""
        return watch.watch(self, ids, timeout_s)
