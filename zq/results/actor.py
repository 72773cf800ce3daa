"""The results actor's process: its sockets, its loop and its answer to each query.

Sockets:
  * ROUTER ``ingest``: state events from the router (EVENTS), each batch with ``upto``
    answered STORED once stored.
  * ROUTER ``query``: GET, WAIT, FORGET, SNAPSHOT and EVENTS from clients.
  * XPUB ``pub``: every stored change, topic = task id (see :mod:`.stream`).

Each step reads a batch of messages, merges the events among them (:mod:`.table`),
publishes the changes and answers the waiters, then stores them in one transaction (off
the waiters' path), and only then tells the router they are stored. A query first
applies the events received before it, so that it sees them.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import zmq

from .. import _lifeline, protocol, security, states
from .._proctitle import set_title
from .._signals import Wakeup
from ..errors import ProtocolError
from ..log import setup_logging
from ..protocol import Cmd, Message
from . import sockets
from .config import ResultsConfig, open_store
from .queries import Queries, Refused, error, valid_events
from .store import Row
from .stream import Stream
from .table import StateTable
from .waiters import Waiters

logger = logging.getLogger("zq.results")

_BATCH = 2000
_EXPIRE_EVERY_S = 60.0
_MAX_IDS_PER_REQUEST = 10_000
_SNAPSHOT_LIMIT = 10_000
_STEP_S = 1.0
# How long a stopping results actor waits for events still on their way.
_LAST_EVENTS_WAIT_S = 0.2
# The router keeps results until told they are stored; telling it this often is enough.
_ACK_EVERY_S = 0.1
# Merged rows are stored together, at most this long after the first of them (or once
# this many wait): one transaction per many tasks, and none on the path of a get(), which
# is answered from memory. The router's journal keeps each final event until it hears the
# event is stored (STORED), so nothing waiting here is lost with this process.
_WRITE_EVERY_S = 0.01
# Past this (or four times the router's max_message_size, if larger) a query is dropped
# unread, with its connection: room for a GET of 10,000 long ids, never more.
_QUERY_SIZE_FLOOR = 64 * 1024 * 1024
_WRITE_ROWS = 5000




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
    queries: Queries
    endpoints: dict[str, str]

    def __init__(self, config: ResultsConfig, wakeup: Wakeup | None = None,
                 lifeline: _lifeline.Lifeline | None = None) -> None:
        self.config = config
        self.wakeup = wakeup
        self.lifeline = lifeline
        self.stopping = False
        self.stream = Stream()
        self.waiters = Waiters()
        self._received: list[Row] = []  # valid events not applied yet
        # The last journal sequence each sender asked to be told about, once stored.
        self._acks: list[tuple[bytes, int, bool, bool]] = []  # peer, upto, resync, complete
        # Set when the store refused a write: acknowledgements wait until the router has
        # sent again, and this actor stored, every final event it was not told stored.
        self._withholding = False
        # What is acknowledged next, per peer, and when: at most every _ACK_EVERY_S, so
        # that a busy router is not woken (and its journal written) once per batch.
        self._stored: dict[bytes, int] = {}
        self._next_ack = 0.0
        self._write_at: float | None = None
        self._next_expire = 0.0
        self._next_trim = 0.0
        # The routers that send events here (normally one), each told what the stream's
        # subscribers want; and the Celery-shaped events received, to publish.
        self._routers: dict[bytes, None] = {}
        self._monitor: list[tuple[list[dict[str, Any]], Any]] = []

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
        self._write(force=True)
        while self.ingest.poll(int(_LAST_EVENTS_WAIT_S * 1000)):
            self._read_ingest()
            self._apply_received()
            self._write(force=True)
            self._acknowledge()

    def setup(self) -> None:
        self.table = StateTable(open_store(self.config))
        self.queries = Queries(self.table, self.waiters, self.stream, self._apply_received,
                               self._received.extend)
        self.ctx = zmq.Context()
        self.auth = None
        keys = None
        if self.config.curve_secret_key:
            keys = security.server_keys(self.config.curve_secret_key,
                                        self.config.curve_authorized_dir or ".")
            # The router forwards events with the same key pair it serves with.
            self.auth = security.start_authenticator(self.ctx, keys, (keys.public_key,))
        self.ingest = self.ctx.socket(zmq.ROUTER)
        self.query = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.XPUB)
        for sock in (self.ingest, self.query, self.pub):
            security.secure_server(sock, keys)
            sock.linger = 0
        self.query.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.query.setsockopt(zmq.MAXMSGSIZE, max(4 * self.config.max_message_size + 65536,
                                                  _QUERY_SIZE_FLOOR))
        sockets.bound_peers(self.query)
        self.ingest.rcvhwm = 0
        self.pub.sndhwm = 100_000
        give_up = time.monotonic() + sockets.BIND_RETRY_S
        self.endpoints = {
            "ingest": sockets.bind(self.ingest, self.config.ingest, give_up),
            "query": sockets.bind(self.query, self.config.query, give_up),
            "pub": sockets.bind(self.pub, self.config.pub, give_up),
        }
        self.poller = zmq.Poller()
        for sock in (self.ingest, self.query, self.pub):
            self.poller.register(sock, zmq.POLLIN)
        if self.wakeup is not None:
            self.poller.register(self.wakeup.fd, zmq.POLLIN)
        logger.info("results actor %s ready at %s", self.stream.epoch, self.endpoints)

    def teardown(self) -> None:
        if self.table.unwritten:
            self.table.write()
        for sock in (self.ingest, self.query, self.pub):
            sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        self.table.close()

    def step(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for messages, handle a batch, expire what is due."""
        if self.lifeline is not None and not self.lifeline.parent_alive():
            logger.warning("the router (pid %d) is gone; stopping", self.lifeline.parent_pid)
            self.stopping = True
            return
        if self._stored:  # acknowledgements are due by then
            timeout_s = min(timeout_s, max(0.0, self._next_ack - time.monotonic()))
        if self._write_at is not None:  # and the next write
            timeout_s = min(timeout_s, max(0.0, self._write_at - time.monotonic()))
        ready = dict(self.poller.poll(int(timeout_s * 1000)))
        if self.wakeup is not None and self.wakeup.fd in ready:
            self.wakeup.drain()
        if self.pub in ready:
            self._read_subscriptions()
        if self.ingest in ready:
            self._read_ingest()
        self._tell_wanted()
        replies: list[tuple[bytes, Message]] = []
        if self.query in ready:
            self._read_queries(replies)
        self._apply_received()
        self._publish_monitor()
        # An answer to a client's own events (or any query) goes once they are stored.
        self._write(force=bool(replies))
        self._acknowledge()
        for peer, reply in replies:
            self._send(peer, reply)
        self._expire(time.time())

    def _write(self, force: bool = False) -> None:
        """Store the merged rows when their time has come (see _WRITE_EVERY_S)."""
        pending = self.table.unwritten
        if not pending:
            self._write_at = None
            return
        now = time.monotonic()
        if self._write_at is None:
            self._write_at = now + _WRITE_EVERY_S
        if force or self.stopping or pending >= _WRITE_ROWS or now >= self._write_at:
            self.table.write()
            self._write_at = None

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
        for peer, msg in protocol.drain(self.ingest, _BATCH, routed=True):
            if msg.cmd is not Cmd.EVENTS:
                logger.warning("dropping %s on the event socket", msg.cmd.value)
                continue
            if peer is not None and peer not in self._routers:
                self._routers[peer] = None
                self.stream.wanted_changed = True
            self._received.extend(valid_events(msg.header.get("events")))
            monitor = msg.header.get("monitor")
            if monitor is not None:
                problem = protocol.monitor_batch_problem(monitor)
                if problem is None:
                    self._monitor.append((monitor, msg.header.get("epoch")))
                else:
                    logger.warning("dropping a batch of events: %s", problem)
            upto = msg.header.get("upto")
            if peer is not None and isinstance(upto, int) and not isinstance(upto, bool):
                self._acks.append((peer, upto, msg.header.get("resync") is True,
                                   msg.header.get("complete") is True))

    def _tell_wanted(self) -> None:
        """Tell the routers which Celery event types the subscribers want now."""
        if not self.stream.wanted_changed or not self._routers:
            return
        self.stream.wanted_changed = False
        msg = Message(Cmd.MONITOR, {"types": sorted(self.stream.wanted)})
        for peer in list(self._routers)[-4:]:
            try:
                protocol.send(self.ingest, msg, identity=peer, flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.debug("could not tell %r what is wanted: %s", peer, exc)
        while len(self._routers) > 4:  # routers of the past (this one restarted)
            del self._routers[next(iter(self._routers))]

    def _publish_monitor(self) -> None:
        """Publish the Celery-shaped events received, a batch per router message."""
        batches, self._monitor = self._monitor, []
        for events, epoch in batches:
            out = self.stream.monitor(events, epoch)
            if out is not None:
                try:
                    protocol.send(self.pub, out[1], identity=out[0], flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass  # a slow receiver: it sees the gap in the clock

    def _acknowledge(self) -> None:
        """Tell the router which of its final events are stored now (its journal keeps
        them until then). After the store refused a write, a later batch's ``upto`` would
        cover the events lost with it, so nothing is acknowledged until the router's
        resend (``resync``) of them is stored; the one that covers every unacknowledged
        event (``complete``) ends the wait."""
        if self.table.unwritten:
            return  # told once the rows they cover are stored
        acks, self._acks = self._acks, []
        if not self.table.all_stored:
            if not self._withholding:
                logger.error("the store refused a write: holding back acknowledgements "
                             "until the router sends those results again")
            self._withholding = True
            return
        for peer, upto, resync, complete in acks:
            if self._withholding and not resync:
                continue
            self._stored[peer] = max(upto, self._stored.get(peer, upto))
            if complete:
                self._withholding = False
        now = time.monotonic()
        if self._stored and (now >= self._next_ack or self.stopping):
            self._next_ack = now + _ACK_EVERY_S
            for peer, upto in self._stored.items():
                try:
                    protocol.send(self.ingest, Message(Cmd.STORED, {"upto": upto}),
                                  identity=peer, flags=zmq.NOBLOCK)
                except zmq.ZMQError as exc:
                    logger.debug("could not acknowledge to %r: %s", peer, exc)
            self._stored.clear()

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
            handler = self.queries.handlers.get(msg.cmd)
            reply: Message | list[Message] | None
            if handler is None:
                logger.warning("unexpected %s on the query socket", msg.cmd.value)
                reply = error(f"the results actor does not take {msg.cmd.value}", rid)
            else:
                try:
                    reply = handler(peer, msg)
                except Refused as exc:
                    reply = error(str(exc), rid)
                except Exception as exc:  # one bad request never ends the results actor
                    logger.exception("error handling %s", msg.cmd.value)
                    reply = error(f"error handling {msg.cmd.value}: {exc}", rid)
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
        changed = self.table.take(self._received, time.time())
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
        batch = self.stream.batch()
        if batch is not None:
            try:
                protocol.send(self.pub, batch[1], identity=batch[0], flags=zmq.NOBLOCK)
            except zmq.Again:
                pass  # a slow watcher sees the version gaps and asks
        for peer, rows in finished.items():
            self._send(peer, Message(Cmd.STATES, {"states": rows}))
        # Stored after the waiters have their answers, a batch of steps at a time (see
        # _write): the commit is off their path. The router hears STORED only after it.

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
            self._next_trim = now + sockets.TRIM_EVERY_S
            sockets.give_back_freed_memory()
        if now < self._next_expire:
            return
        # Often enough that a short result_expires is kept to within a tenth of it.
        self._next_expire = now + min(_EXPIRE_EVERY_S, max(1.0, self.config.result_expires_s / 10))
        removed = self.table.expire(now - self.config.result_expires_s)
        if removed:
            logger.info("expired %d results", removed)

def main(config: ResultsConfig, conn: Any, log_level: str = "INFO") -> None:
    set_title(f"zq results (router pid {os.getppid()})")
    """Entry point of the results actor process: binds, reports its endpoints on ``conn``
    (a multiprocessing pipe), runs until SIGTERM."""
    setup_logging(log_level)
    # SIGTERM when the router dies, whatever kills it: this process stops as if the router
    # had stopped it, storing what reached it and releasing its endpoints for the next one.
    lifeline = _lifeline.attach(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    actor = ResultsActor(config, Wakeup(), lifeline)

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
