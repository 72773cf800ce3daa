"""The actor process: takes tasks from the router up to its credit and runs them one at a time.

Each actor process imports the app once and keeps one instance of each task (the actor
model: ``self`` persists between calls). It has one socket, to the router: a finished task's
DONE carries its result event, which the router forwards to the results actor in one batch
with the others of its step. One message a task instead of two, and a task's states reach
the results actor in the order they happened.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import zmq

from . import protocol, serialization, states
from ._remote import exception_to_data
from ._signals import Wakeup
from .errors import NotRegistered, SerializationError, SoftTimeLimitExceeded
from .protocol import Cmd, Message
from .protocol import attempt_label, exception_data, tracked_id
from .routing import declarations
from .security import secure_client
from .task import IGNORED, Outcome, Request, Task, trace
from .utils import Reconnections
from .worker.loader import load_app

logger = logging.getLogger("zq.actor")

_SEND_WAIT_MS = 500
_SEND_GRACE_MS = 2000


@dataclass(frozen=True)
class ActorConfig:
    app: str
    router: str
    identity: bytes
    host: str
    queues: tuple[str, ...] = ()
    prefetch: int = 1
    supervised: bool = False
    heartbeat_interval_s: float = 1.0
    time_limit_s: float | None = None
    soft_time_limit_s: float | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child_kb: int | None = None
    log_level: str = "INFO"
    curve_secret_key: str | None = None
    curve_server_key: str | None = None


class Actor:
    def __init__(self, config: ActorConfig, wakeup: Wakeup | None = None,
                 deadline: Any = None, current: Any = None):
        self.config = config
        self.wakeup = wakeup
        # Shared with the supervisor: when the running task's hard time limit passes
        # (time.monotonic(), 0 for none). The supervisor kills the process past it.
        self.deadline = deadline
        # Shared with the supervisor: "uid\nretries" of the running task (uid: its id, or
        # a copy's copy_id), so that it can tell a restarted router what this actor holds
        # while the task keeps it busy.
        self.current = current
        self.stopping = False
        self.buffer: deque[Message] = deque()
        self.tasks_run = 0
        self.hostname = socket.gethostname()
        self._last_sent = 0.0
        self._welcomed = False
        self._final_event: dict[str, Any] | None = None
        # (task id, copy_id) of the running task when it is a copy; its events say so.
        self._copy: tuple[Any, str] | None = None
        self._finished: list[dict[str, Any]] = []

    def setup(self) -> None:
        self.app = load_app(self.config.app)
        self.app._state_sink = self._push_event
        self.queues = self.config.queues or (self.app.settings.task_default_queue,)
        self.accept = serialization.content_types(self.app.settings.accept_content)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        settings = self.app.settings
        if self.config.curve_secret_key:
            settings = settings.replace(curve_secret_key=self.config.curve_secret_key,
                                        curve_server_key=self.config.curve_server_key)
        secure_client(self.sock, settings.curve_keys())
        self.sock.identity = self.config.identity
        self.sock.linger = 0
        # Attached before connecting, so every handshake is seen: one after the first is
        # a router that came back (restarted), which must hear at once what this actor
        # holds, before any of it runs.
        self.reconnections = Reconnections(self.sock)
        self.sock.connect(self.config.router)
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
            self._done(msg.header, requeue=True, started=False)
        self._flush_done()
        # Last on this socket, so after every DONE: the router settles this actor on it.
        self._send(Message(Cmd.BYE))
        self.app._state_sink = None
        self.reconnections.close()
        self.sock.close(linger=2000)
        self.ctx.term()

    def run(self) -> None:
        self.setup()
        try:
            while not self.stopping:
                self.step(self.config.heartbeat_interval_s)
        finally:
            self.teardown()

    def _announce(self) -> None:
        header: dict[str, Any] = {
            "queues": list(self.queues), "credit": max(self.config.prefetch - len(self.buffer), 0),
            "host": self.config.host, "pid": os.getpid(), "supervised": self.config.supervised,
            "holding": [[tracked_id(m.header), m.header.get("retries", 0)] for m in self.buffer],
            "declare": declarations(self.app.settings.task_queues),
        }
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

    def step(self, timeout_s: float) -> None:
        wait_ms = 0 if (self.buffer and self._welcomed) else timeout_s * 1000
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
        if self.buffer and self._welcomed and not self.stopping:
            self._execute(self.buffer.popleft())
            self.tasks_run += 1
            # DONE goes before the next task starts: however long that one runs, this
            # result must not wait for it.
            self._flush_done()
            self._maybe_recycle()
        elif time.monotonic() - self._last_sent >= self.config.heartbeat_interval_s:
            self._send(Message(Cmd.HEARTBEAT))

    def _drain(self) -> None:
        for _, msg in protocol.drain(self.sock):
            if msg.cmd is Cmd.TASK:
                self._take(msg)
            elif msg.cmd is Cmd.WELCOME:
                self._welcomed = True
                self._drop_disowned(msg.header.get("drop"))
            elif msg.cmd is Cmd.CONTROL and msg.header.get("op") == "revoke":
                self._drop_revoked(msg.header.get("ids") or [])
            elif msg.cmd is Cmd.RESYNC:
                logger.info("the router does not know this actor (restarted?); announcing")
                self._announce()
            elif msg.cmd is Cmd.ERROR:
                logger.error("router: %s", msg.header.get("message"))
            else:
                logger.warning("unexpected %s from the router", msg.cmd.value)

    # -- running one task ---------------------------------------------------------------

    def _drop_revoked(self, ids: list[str]) -> None:
        """Revoked while waiting in this actor's buffer: never started, reported REVOKED."""
        revoked = set(ids)
        for msg in [m for m in self.buffer if m.header.get("id") in revoked]:
            self.buffer.remove(msg)
            self._final_event = protocol.state_event(
                msg.header["id"], states.REVOKED, retries=msg.header.get("retries", 0),
                name=msg.header.get("task"), ts=time.time(), exc=exception_data(
                    "TaskRevokedError", f"task {msg.header['id']} revoked", args=["revoked"]))
            self._done(msg.header)
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

    def _take(self, msg: Message) -> None:
        batch = msg.header.get("tasks")
        if batch is None:
            self.buffer.append(msg)
            return
        for item in batch if isinstance(batch, list) else ():
            try:
                raw_header, body = item
                header = protocol.unpack(raw_header)
                if not isinstance(header, dict):
                    raise ValueError("header is not a map")
            except Exception as exc:
                logger.error("dropping malformed task in a batch from the router: %s", exc)
                continue
            self.buffer.append(Message(Cmd.TASK, header, body, raw_header))

    def _execute(self, msg: Message) -> None:
        header = msg.header
        self._final_event = None
        self._copy = (header.get("id"), header["copy_id"]) if header.get("copy_id") else None
        try:
            name = header.get("task", "")
            task = self.app.tasks.get(name)
            if task is None:
                raise NotRegistered(f"Received unregistered task of type {name!r}: the worker "
                                    f"running app {self.config.app!r} has no task of that name")
            args, kwargs = self._arguments(header, msg.body)
            request = self._request(task, header, args, kwargs)
            if task.option("track_started", "task_track_started") and not request.ignore_result:
                self._push_event(protocol.state_event(request.id or "", states.STARTED,
                                 retries=request.retries, name=task.name,
                                 pid=os.getpid(), hostname=self.hostname))
            soft = request.soft_time_limit or self.config.soft_time_limit_s
            hard = request.time_limit or self.config.time_limit_s
            try:
                if self.current is not None:
                    self.current.value = attempt_label(tracked_id(header), request.retries).encode()
                if soft:
                    signal.setitimer(signal.ITIMER_REAL, soft)
                if hard and self.deadline is not None:
                    self.deadline.value = time.monotonic() + hard
                outcome = trace(task, request, args, kwargs,
                                report=lambda o: self._report(task, request, o))  # type: ignore[arg-type]
            finally:
                if soft:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                if hard and self.deadline is not None:
                    self.deadline.value = 0.0
                if self.current is not None:
                    self.current.value = b""
            if header.get("chain"):
                self._follow_chain(header, outcome)
            requeue = outcome.state == states.REJECTED and outcome.requeue
            if requeue and not request.acks_late:
                logger.warning("task %s[%s] asked to be requeued, but it was acknowledged on "
                               "receipt (not acks_late): dropped", task.name, request.id)
                requeue = False
            self._done(header, requeue=requeue, started=True)
        except SystemExit as exc:
            # sys.exit() in a task fails the task; it does not end the actor.
            self._final_event = protocol.state_event(
                str(header.get("id", "")), states.FAILURE, retries=header.get("retries", 0),
                name=header.get("task"), exc=exception_to_data(exc), ts=time.time())
            self._done(header)
        except Exception as exc:
            # The task could not even start: unknown name, arguments that will not decode.
            logger.error("task %s[%s] cannot run: %s", header.get("task"), header.get("id"), exc)
            self._final_event = protocol.state_event(
                str(header.get("id", "")), states.FAILURE, retries=header.get("retries", 0),
                name=header.get("task"), exc=exception_to_data(exc), ts=time.time())
            self._done(header)

    def _follow_chain(self, header: dict[str, Any], outcome: Outcome) -> None:
        """Send the next link with this result, or fail the links that will never run."""
        from .canvas import Signature

        links = header["chain"]
        if outcome.state == states.SUCCESS:
            nxt = Signature.from_dict(links[0], app=self.app)
            options = dict(nxt.options)
            if len(links) > 1:
                options["chain"] = links[1:]
            self.app.send_task(nxt.task, (outcome.retval, *nxt.args) if not nxt.immutable
                               else nxt.args, nxt.kwargs, **options)
        elif outcome.state == states.FAILURE:
            data = exception_to_data(outcome.retval, outcome.traceback)
            for link in links:
                link_id = link.get("options", {}).get("task_id")
                if link_id:
                    self._push_event(protocol.state_event(link_id, states.FAILURE,
                                                          name=link.get("task"), exc=data))

    def _arguments(self, header: dict[str, Any], body: bytes) -> tuple[list[Any], dict[str, Any]]:
        payload = serialization.loads(body, header.get("ct", ""), self.accept)
        if (not isinstance(payload, list) or len(payload) != 2
                or not isinstance(payload[0], list) or not isinstance(payload[1], dict)):
            raise SerializationError("task body must be [args list, kwargs map]")
        return payload[0], payload[1]

    def _request(self, task: Task, h: dict[str, Any], args: list[Any],
                 kwargs: dict[str, Any]) -> Request:
        ignore = h.get("ignore_result")
        if ignore is None:
            ignore = task.option("ignore_result", "task_ignore_result")
        return Request(
            id=h["id"], task=h["task"], args=args, kwargs=kwargs, retries=h.get("retries", 0),
            eta=h.get("eta"), expires=h.get("expires"), hostname=self.hostname,
            delivery_info={"exchange": h.get("exchange", ""), "routing_key": h.get("rk"),
                           "queue": h.get("queue"), "priority": h.get("priority"),
                           "redelivered": bool(h.get("redelivered"))},
            is_eager=False, called_directly=False, root_id=h.get("root_id") or h["id"],
            parent_id=h.get("parent_id"), headers=h.get("headers") or {},
            ignore_result=bool(ignore), time_limit=h.get("time_limit"),
            soft_time_limit=h.get("soft_time_limit"), content_type=h.get("ct"),
            acks_late=bool(h.get("acks_late")), copy_id=h.get("copy_id"))

    def _report(self, task: Task, request: Request, outcome: Outcome) -> None:
        if outcome.state == IGNORED or outcome.state == states.REJECTED:
            return
        base = {"retries": request.retries, "name": task.name}
        if outcome.state == states.SUCCESS:
            if request.ignore_result:
                return
            content_type, body = serialization.dumps(outcome.retval,
                                                     self.app.settings.result_serializer)
            event = protocol.state_event(request.id or "", states.SUCCESS,
                                         content_type=content_type, body=body, **base)
        else:
            if request.ignore_result and outcome.state == states.RETRY:
                return
            exc = outcome.retval
            data = exception_to_data(exc, outcome.traceback)
            event = protocol.state_event(request.id or "", outcome.state, exc=data, **base)
        event["ts"] = time.time()
        # The final state travels with DONE; anything reported before it goes now.
        if self._final_event is not None:
            self._push_event(self._final_event)
        self._final_event = event

    def _push_event(self, event: dict[str, Any]) -> None:
        """Send a state change (STARTED, a custom state) to the router, which forwards it."""
        if self._copy is not None and event.get("id") == self._copy[0]:
            event.setdefault("copy", self._copy[1])
        self._send(Message(Cmd.EVENTS, {"events": [event]}))

    def _done(self, header: dict[str, Any], requeue: bool = False, started: bool = True) -> None:
        # The router tracks a copy of a task routed to several queues by its copy_id.
        done: dict[str, Any] = {"id": tracked_id(header), "retries": header.get("retries", 0)}
        if requeue:
            done["requeue"] = True
            done["started"] = started
        if self._final_event is not None:
            if header.get("copy_id"):
                # Which copy ended: the results keep the first copy's end (zq.results).
                self._final_event.setdefault("copy", header["copy_id"])
            done["event"] = self._final_event
            self._final_event = None
        self._finished.append(done)

    def _flush_done(self) -> None:
        if len(self._finished) == 1:
            self._send(Message(Cmd.DONE, self._finished[0]))
        elif self._finished:
            self._send(Message(Cmd.DONE, {"done": self._finished}))
        self._finished = []

    def _maybe_recycle(self) -> None:
        limit = self.config.max_tasks_per_child
        if limit and self.tasks_run >= limit:
            logger.info("recycling after %d tasks (max_tasks_per_child)", self.tasks_run)
            self.stopping = True
        mem_limit = self.config.max_memory_per_child_kb
        if mem_limit:
            import psutil
            rss_kb = psutil.Process().memory_info().rss // 1024
            if rss_kb > mem_limit:
                logger.info("recycling at %d KiB resident (max_memory_per_child %d KiB)",
                            rss_kb, mem_limit)
                self.stopping = True


def _soft_time_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def main(config: ActorConfig, deadline: Any = None, current: Any = None) -> None:
    """Entry point of an actor process started by the supervisor."""
    from .log import setup_logging

    setup_logging(config.log_level)
    actor = Actor(config, Wakeup(), deadline, current)

    def stop(signum: int, frame: Any) -> None:
        actor.stopping = True

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, _soft_time_limit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGALRM})
    actor.run()
