"""The actor process: takes tasks from the router up to its credit and runs them one at a time.

Each actor process imports the app once and keeps one instance of each task (the actor
model: ``self`` persists between calls). It has one socket, to the router: a finished task's
DONE carries its result event, which the router forwards to the results actor in one batch
with the others of its step. One message a task instead of two, and a task's states reach
the results actor in the order they happened. Running a task is ``execute``'s; this loop
owns the socket, the buffer of prefetched tasks and the credit.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from types import FrameType
from typing import Any

import psutil
import zmq

from .. import _lifeline, protocol
from .._proctitle import set_title
from .._signals import Wakeup
from ..errors import SoftTimeLimitExceeded
from ..log import setup_logging
from ..protocol import Cmd, Message, tracked_id
from ..routing import declarations
from ..security import secure_client
from ..utils import Reconnections
from .config import ActorConfig
from .execute import Event, Executed, Executor, SharedBytes, SharedFloat, done_record
from .execute import revoked_record
from .facts import SharedRaw
from .facts import write as write_facts
from .loader import load_app

logger = logging.getLogger("zq.actor")
# One line per task received and ended, at INFO (as a Celery worker logs them).
task_logger = logging.getLogger("zq.task")

_SEND_WAIT_MS = 500
_SEND_GRACE_MS = 2000
# Until the first WELCOME says otherwise.
_DEFAULT_LEASE_S = 5.0
# What the router sends only to an actor it counts as alive: these renew the lease.
_LEASE_RENEWING = frozenset({Cmd.TASK, Cmd.CONFIRM, Cmd.HEARTBEAT, Cmd.WELCOME, Cmd.CONTROL})


class Actor:
    """One actor process's loop: ``setup()``, then ``step()`` until ``stopping``, then
    ``teardown()``. ``deadline`` and ``current`` are shared with the supervisor (see
    :class:`~zq.worker.execute.Executor`)."""

    def __init__(self, config: ActorConfig, wakeup: Wakeup | None = None,
                 deadline: SharedFloat | None = None, current: SharedBytes | None = None,
                 lifeline: _lifeline.Lifeline | None = None, facts: SharedRaw | None = None):
        self.config = config
        # What its supervisor reports of it for inspect (see zq.worker.facts).
        self.facts = facts
        self.processed: dict[str, int] = {}
        self.started = time.time()
        # Time limits set by control per task name: (soft, hard), for tasks started now on.
        self.time_limits: dict[str, tuple[float | None, float | None]] = {
            name: (soft, hard) for name, soft, hard in config.time_limits}
        self.wakeup = wakeup
        self.lifeline = lifeline
        self.deadline = deadline
        self.current = current
        self.stopping = False
        self.buffer: deque[Message] = deque()
        self.tasks_run = 0
        self._last_sent = 0.0
        self._welcomed = False
        # Outcomes sent in DONEs that the router has not confirmed recording, by (tracked
        # id, retries): handed over again after a reconnection.
        self.unconfirmed: dict[tuple[Any, Any], dict[str, Any]] = {}
        # The lease: reserved tasks start only within lease_s of the router's last word.
        self._last_heard = 0.0
        self._last_announced = 0.0
        # Reserved tasks the router granted: they may start before the DONEs before them
        # are confirmed (see zq.router.pace), by (tracked id, retries).
        self.granted: set[tuple[Any, Any]] = set()
        self.lease_s = _DEFAULT_LEASE_S
        self._finished: list[dict[str, Any]] = []
        self._name = config.identity.decode(errors="replace")

    def setup(self) -> None:
        worker = self.config.worker
        self.app = load_app(worker.app)
        # What a task sends (the next link of its chain, its callbacks, its retry, a
        # replacement, a task it calls) is accepted before its DONE goes: a kill in
        # between then loses nothing.
        self.app.conf.update(publish_confirm=True)
        if worker.task_events:  # -E: report each start, for task-started events
            self.app.conf.update(worker_send_task_events=True)
        self.executor = Executor(
            self.app, app_path=worker.app, emit=self._send_event,
            time_limit_s=worker.time_limit_s, soft_time_limit_s=worker.soft_time_limit_s,
            deadline=self.deadline, current=self.current)
        self.app.state_sink = self.executor.emit
        self.queues = self.config.queues if self.config.queues is not None \
            else worker.queues or (self.app.settings.task_default_queue,)
        self._publish_facts(0.0, None)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        secure_client(self.sock, worker.settings(self.app.settings).curve_keys())
        self.sock.identity = self.config.identity
        self.sock.linger = 0
        # Attached before connecting, so every handshake is seen: one after the first is
        # a router that came back (restarted), which must hear at once what this actor
        # holds, before any of it runs.
        self.reconnections = Reconnections(self.sock)
        self.sock.connect(worker.router)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.reconnections.socket, zmq.POLLIN)
        if self.wakeup is not None:
            self.poller.register(self.wakeup.fd, zmq.POLLIN)
        self._announce()

    def teardown(self) -> None:
        # Tasks taken but never started go back to the router.
        while self.buffer:
            msg = self.buffer.popleft()
            self._finished.append(done_record(msg.header, requeue=True, started=False))
        # Not waiting for the router to confirm the last DONEs: they are in its socket, and
        # only a router that dies too loses them (then the journal replays those tasks).
        self._flush_done()
        # Last on this socket, so after every DONE: the router settles this actor on it.
        self._send(Message(Cmd.BYE))
        self.app.state_sink = None
        self.reconnections.close()
        self.sock.close(linger=2000)
        self.ctx.term()

    def run(self) -> None:
        self.setup()
        try:
            while not self.stopping:
                self.step(self.config.worker.heartbeat_interval_s)
        finally:
            self.teardown()

    def _announce(self, handover: bool = True) -> None:
        """READY: its queues, credit and what it holds; with ``handover`` also the outcomes
        the router has not confirmed (not when it only changes its queues: the router got
        them on this very connection, before this READY)."""
        header: dict[str, Any] = {
            "queues": list(self.queues),
            "credit": max(self.config.worker.prefetch - len(self.buffer), 0),
            # An actor runs under a supervisor, which heartbeats for its host.
            "host": self.config.host, "pid": os.getpid(), "supervised": True,
            "holding": [[tracked_id(m.header), m.header.get("retries", 0)] for m in self.buffer],
            "declare": declarations(self.app.settings.task_queues),
            # Its task names: the router hands it only these (zq.router.dispatch), and
            # inspect registered lists them.
            "registered": sorted(self.app.tasks),
        }
        if self.unconfirmed and handover:
            header["done"] = list(self.unconfirmed.values())
        # What it holds waits for the router's answer now, granted or not.
        self.granted.clear()
        self._last_announced = time.monotonic()
        self._send(Message(Cmd.READY, header))

    def _send(self, msg: Message) -> None:
        """Send to the router, waiting while it cannot be reached, but never past a stop.

        A plain send would block for good with no router to take it (down, or a CURVE
        handshake refused), and a SIGTERM could not end the actor.
        """
        while True:
            try:
                protocol.send(self.sock, msg, flags=zmq.NOBLOCK)
                self._last_sent = time.monotonic()
                return
            except zmq.Again:
                if self.stopping and not self.sock.poll(_SEND_GRACE_MS, zmq.POLLOUT):
                    logger.error("router unreachable; dropping %s while stopping",
                                 msg.cmd.value)
                    return
                self.sock.poll(_SEND_WAIT_MS, zmq.POLLOUT)

    def _send_event(self, event: Event) -> None:
        """Send a state change to the router, which forwards it to the results actor."""
        self._send(Message(Cmd.EVENTS, {"events": [event]}))

    def _renew_if_lapsed(self) -> None:
        """With reserved tasks waiting and no word from the router for the lease, the
        router may have counted this actor lost and placed them elsewhere: announce again
        (holding them) and start nothing until the router has answered which it keeps."""
        if not self.buffer:
            return
        now = time.monotonic()
        lapsed = now - self._last_heard >= self.lease_s
        if lapsed and (self._welcomed or now - self._last_announced >= self.lease_s):
            if self._welcomed:
                logger.warning("no word from the router for %.1fs; announcing again before "
                               "starting a reserved task", now - self._last_heard)
            self._welcomed = False
            self._announce()

    def _may_start(self) -> bool:
        """Whether the next reserved task may start: the router welcomed this actor, has
        confirmed every DONE it sent (so it counts that task as the one running) or
        granted this one, and was heard from within the lease (so it does not count this
        actor lost yet)."""
        return (self._welcomed
                and (not self.unconfirmed or _key(self.buffer[0].header) in self.granted)
                and time.monotonic() - self._last_heard < self.lease_s)

    def step(self, timeout_s: float) -> None:
        if self.lifeline is not None and not self.lifeline.parent_alive():
            # No one would enforce time limits or report this actor's death: stop before
            # the next task, handing back what was prefetched.
            logger.warning("the supervisor (pid %d) is gone; stopping",
                           self.lifeline.parent_pid)
            self.stopping = True
            return
        self._renew_if_lapsed()
        may_start = bool(self.buffer) and self._may_start()
        wait_ms = 0 if may_start else int(timeout_s * 1000)
        ready = dict(self.poller.poll(wait_ms))
        if self.wakeup is not None and self.wakeup.fd in ready:
            self.wakeup.drain()
        if self.reconnections.socket in ready:
            # First what came before the reconnection (tasks the old router sent while
            # this actor was busy), so that the announcement lists them.
            self._drain()
            if self.reconnections.came_back():
                logger.info("reconnected to the router; announcing what this actor holds")
                self._welcomed = False
                self._announce()
        if self.sock in ready:
            self._drain()
        if self.buffer and self._may_start() and not self.stopping:
            msg = self.buffer.popleft()
            self.granted.discard(_key(msg.header))
            self._run(msg)
            self.tasks_run += 1
            # DONE goes before the next task starts: however long that one runs, this
            # result must not wait for it.
            self._flush_done()
            self._maybe_recycle()
        elif time.monotonic() - self._last_sent >= self.config.worker.heartbeat_interval_s:
            self._send(Message(Cmd.HEARTBEAT))

    def _drain(self) -> None:
        for _, msg in protocol.drain(self.sock):
            if msg.cmd in _LEASE_RENEWING:
                self._last_heard = time.monotonic()
            if msg.cmd is Cmd.TASK:
                self._take(msg)
            elif msg.cmd is Cmd.CONFIRM:
                self._confirmed(msg.header.get("done"))
            elif msg.cmd is Cmd.HEARTBEAT:
                pass  # the router's answer to ours: the lease goes on
            elif msg.cmd is Cmd.WELCOME:
                self._welcomed = True
                lease_s = msg.header.get("lease_s")
                if isinstance(lease_s, (int, float)) and lease_s > 0:
                    self.lease_s = float(lease_s)
                self._confirmed(msg.header.get("confirm"))
                self._drop_disowned(msg.header.get("drop"))
            elif msg.cmd is Cmd.CONTROL:
                self._control(msg.header)
            elif msg.cmd is Cmd.RESYNC:
                # It counts this actor gone (restarted, or it declared the host lost): run
                # nothing it holds until the router has taken the announcement.
                logger.info("the router does not know this actor (restarted, or it lost "
                            "this host); announcing")
                self._welcomed = False
                self._announce()
            elif msg.cmd is Cmd.ERROR:
                logger.error("router: %s", msg.header.get("message"))
            else:
                logger.warning("unexpected %s from the router", msg.cmd.value)

    # -- the buffer of prefetched tasks --------------------------------------------------

    def _take(self, msg: Message) -> None:
        batch = msg.header.get("tasks")
        if batch is None:
            self.buffer.append(msg)
            if task_logger.isEnabledFor(logging.INFO):
                task_logger.info("Task %s[%s] received", msg.header.get("task"),
                                 msg.header.get("id"))
            return
        self._confirmed(msg.header.get("confirm"))
        granted = msg.header.get("granted")
        granted = {i for i in granted if isinstance(i, int)} \
            if isinstance(granted, list) else set()
        for index, item in enumerate(batch if isinstance(batch, list) else ()):
            try:
                raw_header, body = item
                header = protocol.unpack(raw_header)
                if not isinstance(header, dict):
                    raise ValueError("header is not a map")
            except Exception as exc:
                logger.error("dropping malformed task in a batch from the router: %s", exc)
                continue
            if index in granted:
                self.granted.add(_key(header))
            self.buffer.append(Message(Cmd.TASK, header, body, raw_header))
            if task_logger.isEnabledFor(logging.INFO):
                task_logger.info("Task %s[%s] received", header.get("task"), header.get("id"))

    # -- control ---------------------------------------------------------------------------

    def _control(self, header: dict[str, Any]) -> None:
        op = header.get("op")
        if op == "revoke":
            self._drop_revoked(header.get("ids") or [])
        elif op == "time_limit":
            self._set_time_limit(header)
        elif op in ("add_consumer", "cancel_consumer"):
            self._consume(header.get("queue"), op == "add_consumer")
        else:
            logger.warning("unknown control operation %r from the router", op)

    def _set_time_limit(self, header: dict[str, Any]) -> None:
        name, soft, hard = header.get("task"), header.get("soft"), header.get("hard")
        if not isinstance(name, str) or not all(
                v is None or (isinstance(v, (int, float)) and v > 0) for v in (soft, hard)):
            logger.error("ignoring a bad time_limit request: %r", header)
            return
        if soft is None and hard is None:
            self.time_limits.pop(name, None)
        else:
            self.time_limits[name] = (soft, hard)
        logger.info("time limits of %s now soft %s, hard %s", name, soft, hard)

    def _consume(self, queue: Any, adding: bool) -> None:
        """Start or stop taking from ``queue``: announced again with the new queues (what
        it holds stays held, and runs)."""
        if not isinstance(queue, str) or not queue:
            logger.error("ignoring a consumer change for a bad queue name %r", queue)
            return
        queues = [q for q in self.queues if q != queue] + ([queue] if adding else [])
        if tuple(queues) == self.queues:
            return
        self.queues = tuple(queues)
        logger.info("%s consuming from %s", "now" if adding else "no longer", queue)
        self._announce(handover=False)

    def _limited(self, msg: Message) -> Message:
        """The task with the time limits control set for its name, if any."""
        limits = self.time_limits.get(str(msg.header.get("task")))
        if limits is None:
            return msg
        header = dict(msg.header)
        for key, value in zip(("soft_time_limit", "time_limit"), limits):
            if value is not None:
                header[key] = value
        return Message(msg.cmd, header, msg.body)

    def _publish_facts(self, began: float, task: list[Any] | None) -> None:
        write_facts(self.facts, {"started": self.started, "began": began, "task": task,
                                 "processed": self.processed})

    def _drop_revoked(self, ids: list[str]) -> None:
        """Revoked while waiting in this actor's buffer: never started, reported REVOKED."""
        revoked = set(ids)
        for msg in [m for m in self.buffer if m.header.get("id") in revoked]:
            self.buffer.remove(msg)
            self.granted.discard(_key(msg.header))
            self._finished.append(revoked_record(msg.header))
        self._flush_done()

    def _drop_disowned(self, drop: Any) -> None:
        """Tasks the router placed elsewhere (or that finished) while this actor was busy
        across a router restart: running them here would run them twice."""
        if not isinstance(drop, list):
            return
        disowned = {(uid, retries) for uid, retries in
                    (item for item in drop if isinstance(item, list) and len(item) == 2)
                    if isinstance(uid, str) and isinstance(retries, int)}
        for msg in [m for m in self.buffer
                    if (tracked_id(m.header), m.header.get("retries", 0)) in disowned]:
            logger.warning("dropping task %s[%s]: the router placed it elsewhere",
                           msg.header.get("task"), msg.header.get("id"))
            self.buffer.remove(msg)
            self.granted.discard(_key(msg.header))

    # -- running one task and reporting it ------------------------------------------------

    def _run(self, msg: Message) -> None:
        began = time.monotonic()
        name = str(msg.header.get("task"))
        self._publish_facts(time.time(), list(_key(msg.header)))
        executed = self.executor.execute(self._limited(msg))
        self.processed[name] = self.processed.get(name, 0) + 1
        self._publish_facts(0.0, None)
        try:
            self._follow(executed)
            done = executed.done
        except Exception as exc:
            # A next link that cannot be sent fails this task, as one that cannot start.
            done = self.executor.cannot_run(msg.header, exc)
        done["runtime"] = runtime = time.monotonic() - began
        event = done.get("event")
        if isinstance(event, dict):  # kept with the result (and shown by monitors)
            event["runtime"] = runtime
            event["worker"] = self._name
        self._finished.append(done)
        if task_logger.isEnabledFor(logging.INFO):
            _log_outcome(msg.header, done.get("event"), runtime)

    def _follow(self, executed: Executed) -> None:
        for event in executed.events:
            self._send_event(event)
        for follow_up in executed.sends:
            follow_up.send()

    def _flush_done(self) -> None:
        if len(self._finished) == 1:
            self._send(Message(Cmd.DONE, self._finished[0]))
        elif self._finished:
            self._send(Message(Cmd.DONE, {"done": self._finished}))
        for record in self._finished:
            self.unconfirmed[(record.get("id"), record.get("retries", 0))] = record
        self._finished = []

    def _confirmed(self, keys: Any) -> None:
        """The router recorded these outcomes: they need not be handed over again."""
        for key in keys if isinstance(keys, list) else ():
            if isinstance(key, list) and len(key) == 2:
                self.unconfirmed.pop((key[0], key[1]), None)

    def _maybe_recycle(self) -> None:
        worker = self.config.worker
        if worker.max_tasks_per_child and self.tasks_run >= worker.max_tasks_per_child:
            logger.info("recycling after %d tasks (max_tasks_per_child)", self.tasks_run)
            self.stopping = True
        if worker.max_memory_per_child_kb:
            rss_kb = psutil.Process().memory_info().rss // 1024
            if rss_kb > worker.max_memory_per_child_kb:
                logger.info("recycling at %d KiB resident (max_memory_per_child %d KiB)",
                            rss_kb, worker.max_memory_per_child_kb)
                self.stopping = True


def _log_outcome(header: dict[str, Any], event: Any, runtime: float) -> None:
    """Celery's worker log line for a task that ended."""
    name, task_id = header.get("task"), header.get("id")
    state = event.get("state") if isinstance(event, dict) else None
    if state == "SUCCESS":
        task_logger.info("Task %s[%s] succeeded in %.6fs", name, task_id, runtime)
    elif state == "FAILURE":
        exc = event.get("exc") or {}
        task_logger.info("Task %s[%s] failed in %.6fs: %s: %s", name, task_id, runtime,
                         exc.get("type"), exc.get("message"))
    elif state is not None:
        task_logger.info("Task %s[%s] %s in %.6fs", name, task_id, state, runtime)


def _key(header: dict[str, Any]) -> tuple[Any, Any]:
    return tracked_id(header), header.get("retries", 0)


def _soft_time_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def main(config: ActorConfig, deadline: SharedFloat | None = None,
         current: SharedBytes | None = None, facts: SharedRaw | None = None) -> None:
    """Entry point of an actor process started by the supervisor."""
    setup_logging(config.worker.log_level)
    set_title(f"zq actor {config.identity.decode(errors='replace')} {config.worker.app}")
    # Killed when the supervisor dies, even in the middle of a task: the router then
    # applies its rules for a lost actor, as for any actor killed mid-task.
    lifeline = _lifeline.attach(signal.SIGKILL)
    actor = Actor(config, Wakeup(), deadline, current, lifeline, facts)

    def stop(signum: int, frame: FrameType | None) -> None:
        actor.stopping = True

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, _soft_time_limit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGALRM})
    actor.run()
