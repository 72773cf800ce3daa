"""The results actor's process: its sockets, its loop and its answer to each query.

Sockets:
  * PULL ``ingest``: state events from the router and actor processes (EVENTS).
  * ROUTER ``query``: GET, WAIT, FORGET, SNAPSHOT and EVENTS from clients.
  * XPUB ``pub``: every stored change, topic = task id (see :mod:`.stream`).

Each step reads a batch of messages, applies the events among them in one store
transaction (:mod:`.table`), then publishes the changes and answers the waiters. A query
first applies the events received before it, so that it sees them.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from .. import protocol, security, states
from .._signals import Wakeup
from ..errors import ProtocolError
from ..log import setup_logging
from ..protocol import Cmd, Message
from .memory import MemoryStore
from .sqlite import FILENAME, SQLiteStore
from .store import Row, Store
from .stream import Stream
from .table import StateTable
from .waiters import Waiters

logger = logging.getLogger("zq.results")

_BATCH = 2000
_EXPIRE_EVERY_S = 60.0
_MAX_IDS_PER_REQUEST = 10_000
_SNAPSHOT_LIMIT = 10_000
# A client renews its waits every 10 s (zq.client), so a wait never needs to last long;
# one a peer forgets ends within this and frees its place.
_DEFAULT_WAIT_S = 20.0
_MAX_WAIT_S = 30.0
# Answers queued for one peer that does not read them, beyond what the kernel buffers:
# the next ones are dropped (a client asks again: it resends a GET, SNAPSHOT or FORGET
# and renews its waits). A GET answer can be half a megabyte, and with ZeroMQ's
# default of 1,000 one peer sending GETs it never read took 536 MB here.
_QUERY_SNDHWM = 16
# Queries read ahead from one peer: a client has one or two in flight, and a peer that
# sends faster than it is answered waits (its socket fills) instead of having its
# queries pile up here (300 GETs sent at once took 115 MB with ZeroMQ's default).
_QUERY_RCVHWM = 16
# A peer that vanished without closing its connection (a host gone, a network cut) is
# dropped after this much silence, with the answers queued for it.
_PEER_HEARTBEAT_S = 5.0
_PEER_TIMEOUT_S = 30.0
# Memory freed by ZeroMQ's I/O thread and after large queries stays with glibc's
# allocator unless trimmed: 50 peers sending 10,000 WAITs left 35 MB of freed memory in
# the process, 7 MB once trimmed. A trim costs about a millisecond.
_TRIM_EVERY_S = 5.0
_STEP_S = 1.0
# How long a stopping results actor waits for events still on their way.
_LAST_EVENTS_WAIT_S = 0.2


@dataclass(frozen=True)
class ResultsConfig:
    ingest: str
    query: str
    pub: str
    data_dir: Path | None
    backend: str = "sqlite"
    result_expires_s: float = 86400.0
    curve_secret_key: str | None = None
    curve_authorized_dir: str | None = None


class Refused(Exception):
    """A query answered with an error: it asks for something the results actor refuses."""


Handler = Callable[[bytes, Message], Message | list[Message] | None]


class ResultsActor:
    """Keeps the latest state of every task, answers queries about it, streams changes.

    Drive it with :meth:`run`, or :meth:`setup`, :meth:`step` and :meth:`teardown`.
    """

    # Made in setup, inside the process that uses them.
    ctx: zmq.Context[zmq.Socket[bytes]]
    ingest: zmq.Socket[bytes]
    query: zmq.Socket[bytes]
    pub: zmq.Socket[bytes]
    poller: zmq.Poller
    auth: Any
    table: StateTable
    endpoints: dict[str, str]

    def __init__(self, config: ResultsConfig, wakeup: Wakeup | None = None) -> None:
        self.config = config
        self.wakeup = wakeup
        self.stopping = False
        self.stream = Stream()
        self.waiters = Waiters()
        self._received: list[Row] = []  # valid events not applied yet
        self._next_expire = 0.0
        self._next_trim = 0.0
        self._handlers: dict[Cmd, Handler] = {
            Cmd.GET: self._get,
            Cmd.WAIT: self._wait,
            Cmd.FORGET: self._forget,
            Cmd.SNAPSHOT: self._snapshot,
            Cmd.EVENTS: self._events,
        }

    # -- the loop --------------------------------------------------------------------------

    def run(self, on_ready: Callable[[dict[str, str]], None] | None = None) -> None:
        """Set up, tell ``on_ready`` the bound endpoints, step until stopped, tear down."""
        self.setup()
        try:
            if on_ready is not None:
                on_ready(self.endpoints)
            while not self.stopping:
                self.step(_STEP_S)
            self._store_last_events()
        finally:
            self.teardown()

    def _store_last_events(self) -> None:
        """On the way out, store what the router sent before it stopped us: it lets its
        last events leave before it does, so they are here or in flight by now."""
        while self.ingest.poll(int(_LAST_EVENTS_WAIT_S * 1000)):
            self._read_ingest()
            self._apply_received()

    def setup(self) -> None:
        self.table = StateTable(open_store(self.config))
        self.ctx = zmq.Context()
        self.auth = None
        keys = None
        if self.config.curve_secret_key:
            keys = security.server_keys(self.config.curve_secret_key,
                                        self.config.curve_authorized_dir or ".")
            # The router forwards events with the same key pair it serves with.
            self.auth = security.start_authenticator(self.ctx, keys, (keys.public_key,))
        self.ingest = self.ctx.socket(zmq.PULL)
        self.query = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.XPUB)
        for sock in (self.ingest, self.query, self.pub):
            security.secure_server(sock, keys)
            sock.linger = 0
        self.query.setsockopt(zmq.ROUTER_MANDATORY, 1)
        _bound_peers(self.query)
        self.ingest.rcvhwm = 0
        self.pub.sndhwm = 100_000
        self.endpoints = {
            "ingest": _bind(self.ingest, self.config.ingest),
            "query": _bind(self.query, self.config.query),
            "pub": _bind(self.pub, self.config.pub),
        }
        self.poller = zmq.Poller()
        for sock in (self.ingest, self.query, self.pub):
            self.poller.register(sock, zmq.POLLIN)
        if self.wakeup is not None:
            self.poller.register(self.wakeup.fd, zmq.POLLIN)
        logger.info("results actor %s ready at %s", self.stream.epoch, self.endpoints)

    def teardown(self) -> None:
        for sock in (self.ingest, self.query, self.pub):
            sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        self.table.close()

    def step(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for messages, handle a batch, expire what is due."""
        ready = dict(self.poller.poll(int(timeout_s * 1000)))
        if self.wakeup is not None and self.wakeup.fd in ready:
            self.wakeup.drain()
        if self.pub in ready:
            self._read_subscriptions()
        if self.ingest in ready:
            self._read_ingest()
        replies: list[tuple[bytes, Message]] = []
        if self.query in ready:
            self._read_queries(replies)
        self._apply_received()
        for peer, reply in replies:
            self._send(peer, reply)
        self._expire(time.time())

    def _read_subscriptions(self) -> None:
        while True:
            try:
                frame = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            welcome = self.stream.subscription(frame)
            if welcome is not None:
                topic, msg = welcome
                protocol.send(self.pub, msg, identity=topic, flags=zmq.NOBLOCK)

    def _read_ingest(self) -> None:
        for _, msg in protocol.drain(self.ingest, _BATCH):
            if msg.cmd is Cmd.EVENTS:
                self._received.extend(_valid_events(msg.header.get("events")))
            else:
                logger.warning("dropping %s on the event socket", msg.cmd.value)

    def _read_queries(self, replies: list[tuple[bytes, Message]]) -> None:
        """Answer a batch of queries, each at once unless events it sent still wait to
        be stored: those answers go into ``replies``. A WAIT may get its answer later."""
        def refuse(sender: bytes | None, exc: ProtocolError) -> None:
            logger.warning("malformed query: %s", exc)
            if sender is not None:
                replies.append((sender, protocol.error(str(exc))))

        for peer, msg in protocol.drain(self.query, _BATCH, routed=True, on_error=refuse):
            assert peer is not None
            rid = msg.header.get("rid")
            handler = self._handlers.get(msg.cmd)
            reply: Message | list[Message] | None
            if handler is None:
                logger.warning("unexpected %s on the query socket", msg.cmd.value)
                reply = _error(f"the results actor does not take {msg.cmd.value}", rid)
            else:
                try:
                    reply = handler(peer, msg)
                except Refused as exc:
                    reply = _error(str(exc), rid)
                except Exception as exc:  # one bad request never ends the results actor
                    logger.exception("error handling %s", msg.cmd.value)
                    reply = _error(f"error handling {msg.cmd.value}: {exc}", rid)
            if isinstance(reply, list):
                replies.extend((peer, one) for one in reply)
            elif reply is not None:
                replies.append((peer, reply))
            if not self._received:
                # Nothing waits to be stored before these answers: send them now, so
                # that a batch of large answers (a GET can be half a megabyte) is never
                # held all at once.
                for answer in replies:
                    self._send(*answer)
                replies.clear()

    def _apply_received(self) -> None:
        """Apply the events received so far; publish the changes, answer their waiters."""
        if not self._received:
            return
        changed = self.table.apply(self._received, time.time())
        self._received.clear()
        finished: dict[bytes, list[Row]] = {}
        for row in changed:
            event = self.stream.publish(row)
            if event is not None:
                topic, msg = event
                try:
                    protocol.send(self.pub, msg, identity=topic, flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass  # a slow subscriber; it sees the version gap and asks
            if row["state"] in states.READY_STATES:
                for peer in self.waiters.pop(row["id"]):
                    finished.setdefault(peer, []).append(row)
        for peer, rows in finished.items():
            self._send(peer, Message(Cmd.STATES, {"states": rows}))

    def _send(self, peer: bytes, msg: Message) -> None:
        try:
            protocol.send(self.query, msg, identity=peer, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            logger.debug("could not answer %r: %s", peer, exc)

    def _expire(self, now: float) -> None:
        """Drop the waits that ended (each step: it costs only those), and when due the
        results older than ``result_expires``."""
        self.waiters.expire(now)
        if now >= self._next_trim:
            self._next_trim = now + _TRIM_EVERY_S
            _give_back_freed_memory()
        if now < self._next_expire:
            return
        # Often enough that a short result_expires is kept to within a tenth of it.
        self._next_expire = now + min(_EXPIRE_EVERY_S, max(1.0, self.config.result_expires_s / 10))
        removed = self.table.expire(now - self.config.result_expires_s)
        if removed:
            logger.info("expired %d results", removed)

    # -- one handler per query -------------------------------------------------------------

    def _get(self, peer: bytes, msg: Message) -> Message:
        ids = _ids(msg)
        self._apply_received()
        found = self.table.lookup(ids)
        rows = [found.get(i) or {"id": i, "state": states.PENDING} for i in ids]
        return Message(Cmd.STATES, {"states": rows, "rid": msg.header.get("rid")})

    def _wait(self, peer: bytes, msg: Message) -> list[Message]:
        """The finished ones of ``ids`` now; each of the others once it finishes, if it
        does within ``timeout_s`` (at most ``_MAX_WAIT_S``) and there is room to wait."""
        ids = _ids(msg)
        self._apply_received()
        timeout_s = msg.header.get("timeout_s", _DEFAULT_WAIT_S)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
                or not timeout_s > 0:
            timeout_s = _DEFAULT_WAIT_S
        deadline = time.time() + min(float(timeout_s), _MAX_WAIT_S)
        found = self.table.lookup(ids)
        ready = []
        refused = 0
        for task_id in ids:
            row = found.get(task_id)
            if row is not None and row["state"] in states.READY_STATES:
                ready.append(row)
            elif not self.waiters.add(task_id, peer, deadline):
                refused += 1
        replies = [Message(Cmd.STATES, {"states": ready})] if ready else []
        if refused:
            replies.append(_error(self._no_room(peer, refused, len(ids)), None))
        return replies

    def _no_room(self, peer: bytes, refused: int, asked: int) -> str:
        if self.waiters.held_by(peer) >= self.waiters.per_peer:
            why = (f"this peer already waits for {self.waiters.per_peer} tasks, "
                   f"the most one peer may")
        else:
            why = f"{self.waiters.limit} waits are held, the most the results actor keeps"
        return (f"WAIT refused for {refused} of {asked} ids: {why}; ask again once "
                f"some have finished")

    def _forget(self, peer: bytes, msg: Message) -> Message:
        ids = _ids(msg)
        self._apply_received()
        self.table.forget(ids)
        return Message(Cmd.STATES, {"states": [], "rid": msg.header.get("rid")})

    def _snapshot(self, peer: bytes, msg: Message) -> Message:
        """The rows of ``ids``, or of the unfinished tasks, and the ``seq`` they are
        current to: a subscriber applies the stream's events after that ``seq``."""
        ids = _ids(msg) if msg.header.get("ids") else None
        self._apply_received()
        rows = self.table.snapshot(ids, _SNAPSHOT_LIMIT)
        return Message(Cmd.STATES, {"states": rows, "seq": self.stream.seq,
                                    "rid": msg.header.get("rid")})

    def _events(self, peer: bytes, msg: Message) -> Message:
        """State events from a client (``update_state`` outside a worker): all or none."""
        events = msg.header.get("events")
        good = _valid_events(events)
        if not isinstance(events, list) or len(good) != len(events):
            raise Refused("EVENTS needs 'events', a list of valid state events; refused")
        self._received.extend(good)
        return Message(Cmd.STATES, {"states": [], "rid": msg.header.get("rid")})


def open_store(config: ResultsConfig) -> Store:
    """The store ``config`` asks for: SQLite in the data dir unless memory is asked for."""
    if config.backend == "memory" or config.data_dir is None:
        return MemoryStore()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(config.data_dir / FILENAME)


def _ids(msg: Message) -> list[str]:
    ids = msg.header.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) \
            or len(ids) > _MAX_IDS_PER_REQUEST:
        raise Refused(f"{msg.cmd.value} needs 'ids': a list of at most "
                      f"{_MAX_IDS_PER_REQUEST} task ids")
    return ids


def _valid_events(events: Any) -> list[Row]:
    """The events that can be stored; each other one is logged and dropped."""
    if not isinstance(events, list):
        logger.warning("dropping EVENTS without an event list")
        return []
    good = []
    for event in events:
        problem = protocol.event_problem(event)
        if problem:
            logger.warning("dropping event: %s", problem)
        else:
            good.append(event)
    return good


def _error(message: str, rid: Any) -> Message:
    msg = protocol.error(message)
    if rid is not None:
        msg.header["rid"] = rid
    return msg


def _load_malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``, which returns freed memory to the system; elsewhere
    a no-op."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


_give_back_freed_memory = _load_malloc_trim()


def _bound_peers(sock: zmq.Socket[bytes]) -> None:
    """Bound what the query socket keeps for each peer: its queries read ahead, the
    answers queued for it, and how long it stays after going silent."""
    sock.sndhwm = _QUERY_SNDHWM
    sock.rcvhwm = _QUERY_RCVHWM
    sock.heartbeat_ivl = int(_PEER_HEARTBEAT_S * 1000)
    sock.heartbeat_timeout = int(_PEER_TIMEOUT_S * 1000)


def _bind(sock: zmq.Socket[bytes], endpoint: str) -> str:
    """Bind, falling back to a random port when a remembered one is taken."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError:
        if not endpoint.startswith("tcp://") or endpoint.endswith(":*"):
            raise
        endpoint = endpoint.rsplit(":", 1)[0] + ":*"
        sock.bind(endpoint)
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


def main(config: ResultsConfig, conn: Any, log_level: str = "INFO") -> None:
    """Entry point of the results actor process: binds, reports its endpoints on ``conn``
    (a multiprocessing pipe), runs until SIGTERM."""
    setup_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    actor = ResultsActor(config, Wakeup())

    def stop(signum: int, frame: Any) -> None:
        actor.stopping = True

    def report(endpoints: dict[str, str]) -> None:
        conn.send(endpoints)
        conn.close()

    signal.signal(signal.SIGTERM, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        actor.run(on_ready=report)
    finally:
        logger.info("results actor %d stopped", os.getpid())
