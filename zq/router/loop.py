"""The router's loop: the one place that owns its sockets and reads the clock.

One ROUTER socket serves clients, actor processes and supervisors alike; the command of
each message picks its handler from :data:`HANDLERS`. Handlers and the rules behind them
(:mod:`.core` and the parts it holds) take ``now`` and leave what to send in the core;
each :meth:`Router.step` then commits the journal, sends the replies that may leave,
hands out tasks, and passes state events on to the results actor (:mod:`.children`).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from .. import protocol, security
from .._proctitle import set_title
from .._signals import Wakeup
from ..errors import ConfigurationError, ProtocolError
from ..protocol import Cmd, Message
from . import control, files, intake, members
from .book import Entry
from .children import ResultsChild
from .config import RouterConfig
from .core import ACCEPT_LATER_S, Core
from .datadir import DataDir
from .journal import Journal

logger = logging.getLogger("zq.router")

# Messages handled per step at most, so that timers and dispatch are not starved.
_BATCH = 1000
# State events go to the results actor when the router's socket is drained (they travel,
# and are stored, in batches as large as a step's); under a backlog of full batches, at
# least this often.
_EVENT_FLUSH_S = 0.001
_HOUSEKEEPING_S = 1.0
_LAST_EVENTS_LINGER_S = 5.0
_RESEND_UNSTORED_S = 5.0
_RESEND_BATCH = 1000

# Exit statuses of ``zq router`` besides 0.
EXIT_CANNOT_START = 2  # the data dir or an endpoint cannot be used: one line says why
EXIT_JOURNAL_FAILED = 3  # an fsync of the journal failed

Handler = Callable[[Core, bytes, Message, float], None]

HANDLERS: dict[Cmd, Handler] = {
    Cmd.SUBMIT: intake.on_submit, Cmd.PUBLISH: intake.on_publish, Cmd.HELLO: members.on_hello, Cmd.CONTROL: control.on_control,
    Cmd.READY: members.on_ready, Cmd.DONE: members.on_done, Cmd.HEARTBEAT: members.on_heartbeat,
    Cmd.LOST: members.on_lost, Cmd.EVENTS: members.on_events, Cmd.BYE: members.on_bye,
    Cmd.WAIT: intake.on_wait, Cmd.MONITOR: intake.on_monitor,
}


class JournalFailed(Exception):
    """The journal could not be made durable: the router stops rather than answer."""


class Router:
    def __init__(self, config: RouterConfig, wakeup: Wakeup | None = None):
        self.config = config
        self.wakeup = wakeup
        self.stopping = False
        self.epoch = uuid.uuid4().hex[:12]
        self._last_flush = 0.0
        # When the results actor last said it stored something (see _resend_unstored).
        self._stored_at = time.monotonic()
        self._next_housekeeping = 0.0
        self._dispatch_after = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    def setup(self) -> None:
        """Start everything; a :class:`ConfigurationError` (one line: the data dir is not
        usable or in use, the address is taken...) when it cannot, with nothing left
        running."""
        # Before anything else: a second router must not bind the first one's address.
        self.data = DataDir.open(self.config.data_dir)
        try:
            self._start()
        except BaseException:
            self._stop_started()
            raise

    def _start(self) -> None:
        config = self.config
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.keys: security.ServerKeys | None = None
        self.auth: Any = None
        if config.curve_secret_key:
            self.keys = security.server_keys(config.curve_secret_key,
                                             config.curve_authorized_dir or ".")
            self.auth = security.start_authenticator(self.ctx, self.keys)
        self.sock = self._bind()
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.results = ResultsChild(self.ctx, config, self.endpoint, self.keys)
        self.results.epoch = self.epoch
        self.results.start()
        self.journal = Journal(config.data_dir / "journal.log", fsync=config.journal_fsync)
        self.core = Core(self.journal, max_redeliveries=config.max_redeliveries,
                         max_queue_length=config.max_queue_length,
                         max_message_size=config.max_message_size,
                         host_timeout_s=config.host_timeout_s)
        self.core.info = self._info
        self._welcome()
        files.load_bindings(self.core, self._bindings_path)
        try:
            if files.replay(self.core, self.journal):
                # Actors still holding replayed tasks re-announce them meanwhile.
                self._dispatch_after = time.monotonic() + config.resync_grace_s
        except OSError as exc:
            raise ConfigurationError(f"journal {self.journal.path}: "
                                     f"{exc.strerror or exc}") from None
        self.core.durable.failure = files.failure(self.journal)  # no room to rewrite it
        if self.core.durable.failure is not None:
            files.changed(self.core, self.journal, None)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.results.sentinel, zmq.POLLIN)
        self.poller.register(self.results.socket, zmq.POLLIN)
        if self.wakeup is not None:
            self.poller.register(self.wakeup.fd, zmq.POLLIN)
        if self.journal.wakeup_fd is not None:
            self.poller.register(self.journal.wakeup_fd, zmq.POLLIN)
        logger.info("router %s listening on %s", self.epoch, self.endpoint)

    def _bind(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.ctx.socket(zmq.ROUTER)
        security.secure_server(sock, self.keys)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.linger = 0
        sock.sndhwm = 0
        sock.rcvhwm = 0
        # Past max_message_size a task is read and refused with a clear error; only a
        # frame past this hard cap makes libzmq drop the connection unread.
        sock.setsockopt(zmq.MAXMSGSIZE, max(4 * self.config.max_message_size + 65536,
                                            64 * 1024 * 1024))
        try:
            sock.bind(self.config.bind)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            if exc.errno == zmq.EADDRINUSE:
                why = "the address is in use (another router, or another program, holds it)"
            else:  # zmq's own text repeats the address: one mention is enough
                why = zmq.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigurationError(f"cannot listen on {self.config.bind}: {why}") from None
        return sock

    @property
    def _bindings_path(self) -> Path:
        return self.config.data_dir / "bindings.msgpack"

    def _welcome(self) -> None:
        self.core.welcome = {"results": self.results.endpoints, "epoch": self.epoch}

    def teardown(self) -> None:
        try:
            if self.journal.error is None:
                files.commit(self.core, self.journal, time.time(), retry=True)
            if self.journal.pending:
                logger.critical("%s: %d records (tasks finished or revoked) are lost; those "
                                "tasks may run again after a restart",
                                self.core.durable.failure, self.journal.pending)
            self._flush_events()
            self.journal.close()
            if self.journal.error is None:
                self._answer()  # everything answered ACCEPTED is on disk now
            elif self.core.durable.held:
                logger.critical("not answering %d requests: the journal could not be synced",
                                len(self.core.durable.held))
        finally:
            # The last answers and events leave before the context ends, and the results
            # actor is stopped only then, so that it stores every event sent to it.
            self.sock.close(linger=500)
            self.results.close(_LAST_EVENTS_LINGER_S)
            if self.auth is not None:
                self.auth.stop()
            self.ctx.term()
            self.results.stop()
            self.data.close()

    def _stop_started(self) -> None:
        """What a setup that failed half way had started."""
        results = getattr(self, "results", None)
        if results is not None:
            results.close(0)
            results.stop()
        journal = getattr(self, "journal", None)
        if journal is not None:
            journal.close()
        if getattr(self, "sock", None) is not None:
            self.sock.close(linger=0)
        if getattr(self, "auth", None) is not None:
            self.auth.stop()
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
        self.data.close()

    def run(self) -> None:
        self.setup()
        try:
            while not self.stopping:
                self.step(0.5)
        finally:
            self.teardown()

    # -- one step -----------------------------------------------------------------------

    def step(self, timeout_s: float) -> None:
        core = self.core
        now = time.time()
        deadline = core.schedule.next_deadline()
        if deadline is not None:
            timeout_s = max(0.0, min(timeout_s, deadline - now))
        if core.events or core.monitor.pending:
            timeout_s = min(timeout_s, _EVENT_FLUSH_S)
        if core.later_since is not None:
            timeout_s = max(0.0, min(timeout_s, core.later_since + ACCEPT_LATER_S - now))
        ready = dict(self.poller.poll(int(timeout_s * 1000)))
        if self.wakeup is not None and self.wakeup.fd in ready:
            self.wakeup.drain()
        if self.journal.wakeup_fd is not None and self.journal.wakeup_fd in ready:
            _drain_fd(self.journal.wakeup_fd)
            if self.journal.error is not None:
                raise JournalFailed(f"the journal could not be synced: {self.journal.error}")
        handled = self._drain() if self.sock in ready else 0
        if self.results.socket in ready:
            for upto in self.results.stored():
                core.stored(upto)
                self._stored_at = time.monotonic()
            core.monitor.subscribed(self.results.wanted)
        if self.results.sentinel in ready and self.results.died():
            self._restart_results()
        now = time.time()
        core.monitor.now = now
        core.fire(now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + _HOUSEKEEPING_S
            members.housekeeping(core, now)
            core.waiters.forget(core.book.tasks.__contains__)
            core.flush_confirms()
            self._resend_unstored()
        if core.bindings_changed:
            files.save_bindings(self.core, self._bindings_path)
        files.commit(self.core, self.journal, now)
        if self.journal.write_error is None and self.journal.should_compact():
            self.journal.compact([(e.raw_header or protocol.pack(e.header), e.body)
                                  for e in core.book.tasks.values()],
                                 list(core.book.revoked), list(core.unstored.items()),
                                 core.held_parts(), core.book.finished_attempts())
        self._answer()
        if core.dirty and time.monotonic() >= self._dispatch_after:
            core.dirty = False
            for identity, entries in core.deal(time.time()).items():
                self._deliver(identity, entries)
        # Events go as soon as the socket is drained (a step that took less than a full
        # batch); under a backlog, at least every _EVENT_FLUSH_S.
        if (core.events or core.monitor.pending) and (
                handled < _BATCH or time.monotonic() - self._last_flush >= _EVENT_FLUSH_S):
            self._flush_events()

    def _drain(self) -> int:
        """Handle the messages waiting on the socket (up to a batch); returns how many."""
        count = 0
        for identity, msg in protocol.drain(self.sock, _BATCH, routed=True,
                                            on_error=self._malformed):
            count += 1
            assert identity is not None
            self._handle(identity, msg)
        return count

    def _handle(self, identity: bytes, msg: Message) -> None:
        handler = HANDLERS.get(msg.cmd)
        if handler is None:
            logger.warning("unexpected %s from %r", msg.cmd.value, identity)
            self.core.refuse(identity, f"the router does not take {msg.cmd.value}")
            return
        now = time.time()
        self.core.seen(identity, now)
        self.core.monitor.now = now
        try:
            handler(self.core, identity, msg, now)
        except Exception as exc:
            logger.exception("error handling %s from %r", msg.cmd.value, identity)
            self.core.reply(identity, protocol.error(
                f"router error handling {msg.cmd.value}: {exc}", kind="ZqError"))

    def _malformed(self, identity: bytes | None, exc: ProtocolError) -> None:
        logger.warning("malformed message from %r: %s", identity, exc)
        if identity is not None:
            self.core.refuse(identity, str(exc))

    def _answer(self) -> None:
        """Send what may leave now; place the accepted tasks whose commit is on disk."""
        core = self.core
        if core.waiters.pushes:
            # Results for clients waiting here, after the step's journal commit (with
            # fsync they wait for its sync, as answers do); each answers for its task's
            # ACCEPTED too. The results actor gets them first: a client that asks it for
            # the state of a task it just got the result of finds that state there.
            self._flush_events()
            for identity, push in core.waiters.take_pushes():
                core.covered(identity, [row["id"] for row in push.header["states"]])
                core.reply(identity, push)
        core.flush_later(time.time(), force=self.stopping)
        replies, core.replies = core.replies, []
        for identity, msg in _coalesced(core.durable.outgoing(replies)):
            self._send(identity, msg)
        synced = core.durable.synced_entries()
        if synced:
            now = time.time()
            for entry in synced:
                core.place(entry, now)

    def _send(self, identity: bytes, msg: Message) -> bool:
        try:
            protocol.send(self.sock, msg, identity=identity)
            return True
        except zmq.ZMQError as exc:
            logger.debug("peer %r unreachable (%s); dropping %s", identity, exc, msg.cmd.value)
            return False

    def _deliver(self, identity: bytes, entries: list[Entry]) -> None:
        """What one actor got in a dispatch round, in one message, with the confirmations
        of its DONEs recorded by now (this step's journal write is done) and which of
        these tasks it may start before its DONEs are confirmed (see :mod:`.pace`)."""
        actor = self.core.actors.get(identity)
        confirms = self.core.take_confirms(identity)
        granted = [] if actor is None else \
            [index for index, entry in enumerate(entries) if entry.key in actor.granted]
        if len(entries) == 1 and confirms is None and not granted:
            entry = entries[0]
            msg = Message(Cmd.TASK, entry.header, entry.body, entry.raw_header)
        else:
            header: dict[str, Any] = {"tasks": [[e.raw_header or protocol.pack(e.header),
                                                 e.body] for e in entries]}
            if confirms is not None:
                header["confirm"] = confirms
            if granted:
                header["granted"] = granted
            msg = Message(Cmd.TASK, header)
        if not self._send(identity, msg):
            self.core.undeliverable(identity, entries)

    def _flush_events(self) -> None:
        if self.core.events or self.core.monitor.pending:
            self._last_flush = time.monotonic()
            events, self.core.events = self.core.events, []
            unstored = self.core.unstored
            self.results.send_events(events, next(reversed(unstored)) if unstored else None,
                                     monitor=self.core.monitor.take())

    def _resend_unstored(self) -> None:
        """Results the results actor has not confirmed storing for a while (its store
        refused them: a full disk) are sent again, the oldest first, a bounded batch at a
        time, marked as a resend so that it acknowledges them once stored."""
        unstored = self.core.unstored
        if not unstored or time.monotonic() - self._stored_at < _RESEND_UNSTORED_S:
            return
        self._stored_at = time.monotonic()
        self._flush_events()  # newer events keep their place behind the older ones
        batch = list(itertools.islice(unstored.items(), _RESEND_BATCH))
        logger.warning("the results actor has not confirmed storing %d results; sending "
                       "%d again", len(unstored), len(batch))
        self.results.send_events([event for _, event in batch], batch[-1][0], resync=True,
                                 complete=len(batch) == len(unstored))

    def _restart_results(self) -> None:
        logger.error("the results actor exited with %s; restarting it",
                     self.results.process.exitcode)
        self.poller.unregister(self.results.sentinel)
        self.poller.unregister(self.results.socket)
        self.results.start()
        self._welcome()
        self.poller.register(self.results.sentinel, zmq.POLLIN)
        self.poller.register(self.results.socket, zmq.POLLIN)
        # Its subscribers resubscribe by themselves, and it says what they want.
        self.core.monitor.subscribed(frozenset())
        # What the old one may not have stored goes to the new one, before newer events
        # (some twice, which the results actor takes as the same final state).
        self.core.events[:0] = list(self.core.unstored.values())

    def _info(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            # Journal commits written (one per step that recorded something) and fsyncs
            # (with --journal-fsync: each covers every commit written before it began).
            "journal": {"writes": self.journal.written, "syncs": self.journal.syncs,
                        "failure": self.core.durable.failure},
        }

    def stats(self) -> dict[str, Any]:
        return control.stats(self.core, {}, time.time())


def _coalesced(replies: Any) -> list[tuple[bytes, Message]]:
    """The replies, with the ACCEPTEDs of single tasks to one peer merged into one
    ``ACCEPTED {"ids": [...]}`` (a client sending tasks without waiting for each answer
    gets them confirmed in batches)."""
    out: list[tuple[bytes, Message]] = []
    merged: dict[bytes, list[str]] = {}
    for identity, msg in replies:
        if msg.cmd is Cmd.ACCEPTED and len(msg.header) == 1 and "id" in msg.header:
            ids = merged.get(identity)
            if ids is None:
                ids = merged[identity] = []
                out.append((identity, Message(Cmd.ACCEPTED, {"ids": ids})))
            ids.append(msg.header["id"])
        else:
            out.append((identity, msg))
    return [(identity, Message(Cmd.ACCEPTED, {"id": msg.header["ids"][0]}))
            if msg.cmd is Cmd.ACCEPTED and "ids" in msg.header and len(msg.header) == 1
            and len(msg.header["ids"]) == 1 else (identity, msg) for identity, msg in out]


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def main(config: RouterConfig) -> None:
    """Run a router until SIGTERM or SIGINT; the journal is flushed on the way out."""
    set_title(f"zq router {config.bind} {config.data_dir}")
    router = Router(config, Wakeup())

    def stop(signum: int, frame: Any) -> None:
        router.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        router.run()
    except JournalFailed as exc:
        logger.critical("%s; stopping: restart the router to replay the journal", exc)
        raise SystemExit(EXIT_JOURNAL_FAILED) from None
    logger.info("router stopped")
