"""The router: accepts tasks, journals them, and hands them to actors that have credit.

One ROUTER socket serves clients, actor processes and supervisors alike; the command of
each message tells them apart. The router owns every timer a task can have (countdown and
ETA, retry delays, expiry) and the rules for a task whose actor died. It starts the results
actor as a child process and forwards task state events to it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import multiprocessing
import signal
import time
import uuid
import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from .. import protocol, results, security, states
from .._signals import Wakeup
from ..errors import ProtocolError
from ..protocol import MAX_QUEUE_NAME, Cmd, Message, copy_id, exception_data
from ..ratelimit import RateLimiter, parse_rate
from ..utils import reachable
from .bindings import Bindings
from .book import DEAD, INFLIGHT, QUEUED, SCHEDULED, SYNCING, Entry, TaskQueue
from .journal import Journal

logger = logging.getLogger("zq.router")

_BATCH = 1000
# While busy, the router sends state events to the results actor at most this often, so
# they travel (and are stored) in batches; an idle step sends them at once.
_EVENT_FLUSH_S = 0.001
# Finished attempts are remembered in generations of this many (two to three of them).
_FINISHED_GENERATION = 50_000
_REVOKED_KEPT = 50_000


@dataclass(frozen=True)
class RouterConfig:
    bind: str = "tcp://127.0.0.1:5555"
    data_dir: Path = Path("zq-data")
    results_backend: str = "sqlite"
    result_expires_s: float = 86400.0
    host_timeout_s: float = 10.0
    max_message_size: int = 16 * 1024 * 1024
    max_queue_length: int | None = None
    journal_fsync: bool = False
    # After a restart, dispatch waits this long for actors to re-announce what they hold.
    resync_grace_s: float = 2.0
    log_level: str = "INFO"
    curve_secret_key: str | None = None
    curve_authorized_dir: str | None = None


@dataclass
class ActorState:
    identity: bytes
    host: str
    pid: int
    queues: tuple[str, ...]
    credit: int
    supervised: bool
    registered_at: float
    inflight: OrderedDict[tuple[str, int], Entry] = field(default_factory=OrderedDict)
    # Set when its supervisor saw it exit cleanly: no more tasks; its BYE settles it.
    departed_at: float | None = None
    # Known only from its supervisor's heartbeat (busy across a router restart): it is
    # asked to announce itself once its task is done.
    placeholder: bool = False


@dataclass
class HostState:
    host: str
    identity: bytes
    last_seen: float


def _task_header_problem(h: dict[str, Any]) -> str | None:
    if not isinstance(h.get("id"), str) or not h["id"] or len(h["id"]) > 255:
        return "a task needs an 'id' string of 1 to 255 characters"
    if not isinstance(h.get("task"), str) or not h["task"]:
        return "a task needs a 'task' name string"
    if not isinstance(h.get("ct"), str):
        return "a task needs a 'ct' content type string"
    for key in ("eta", "expires", "time_limit", "soft_time_limit"):
        if key in h and not isinstance(h[key], (int, float)):
            return f"'{key}' must be a number"
    for key in ("retries", "max_redeliveries", "redeliveries"):
        if key in h and (not isinstance(h[key], int) or h[key] < 0):
            return f"'{key}' must be a non-negative integer"
    if "priority" in h and (not isinstance(h["priority"], int) or not 0 <= h["priority"] <= 9):
        return "'priority' must be an integer from 0 to 9"
    if "queue" in h and not (isinstance(h["queue"], str)
                             and len(h["queue"]) <= MAX_QUEUE_NAME):
        return f"'queue' must be a string of at most {MAX_QUEUE_NAME} characters"
    if "copy_id" in h and not (isinstance(h["copy_id"], str) and len(h["copy_id"]) <= 511
                               and h["copy_id"].startswith(h["id"] + "\x1f")
                               and isinstance(h.get("queue"), str) and h["queue"]):
        return ("'copy_id' must be the task id, \\x1f and a queue name (at most 511 "
                "characters), with 'queue' set")
    return None


def _control_error(msg: Message, message: str) -> Message:
    return Message(Cmd.ERROR, {"rid": msg.header.get("rid"), "error": "ZqError",
                               "message": message})


class Router:
    def __init__(self, config: RouterConfig, wakeup: Wakeup | None = None):
        self.config = config
        self.wakeup = wakeup
        self.stopping = False
        self.epoch = uuid.uuid4().hex[:12]
        self.queues: dict[str, TaskQueue] = {}
        # Accepted, unfinished tasks by uid (see zq.routing.Entry), and the uids of the
        # copies of a task routed to several queues by its id.
        self.tasks: dict[str, Entry] = {}
        self.copies: dict[str, set[str]] = {}
        self.finished = RecentKeys(_FINISHED_GENERATION)
        self.revoked: OrderedDict[str, None] = OrderedDict()
        self.actors: dict[bytes, ActorState] = {}
        self.hungry: dict[bytes, ActorState] = {}
        self.hosts: dict[str, HostState] = {}
        self.timers: list[tuple[float, int, Entry]] = []
        # Expiry times of queued tasks, by id so that a finished task is not kept alive.
        self.expiries: list[tuple[float, str, int]] = []
        # Per task name: the limiter, and the rate set by control (which wins over headers).
        self.bindings = Bindings()
        self.limiters: dict[str, RateLimiter] = {}
        self._rates: dict[str, float | None] = {}
        self._rate_overrides: dict[str, float | None] = {}
        self._timer_seq = itertools.count()
        self._events: list[dict[str, Any]] = []
        self._replies: list[tuple[bytes, Message]] = []
        # With journal_fsync, what waits for the sync covering a journal commit: replies
        # (commits written, to, reply) and accepted tasks (the commit holding them, entry).
        self._held: deque[tuple[int, bytes, Message]] = deque()
        self._syncing: deque[tuple[int, Entry]] = deque()
        self._dirty = False
        self._last_flush = 0.0
        self._next_housekeeping = 0.0
        self._dispatch_after = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    def setup(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.ctx = zmq.Context()
        self.keys = None
        self.auth = None
        if self.config.curve_secret_key:
            self.keys = security.server_keys(self.config.curve_secret_key,
                                             self.config.curve_authorized_dir or ".")
            self.auth = security.start_authenticator(self.ctx, self.keys)
        self.sock = self.ctx.socket(zmq.ROUTER)
        security.secure_server(self.sock, self.keys)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.linger = 0
        self.sock.sndhwm = 0
        self.sock.rcvhwm = 0
        # Past max_message_size a task is read and refused with a clear error; only a
        # frame past this hard cap makes libzmq drop the connection unread.
        self.sock.setsockopt(zmq.MAXMSGSIZE, max(4 * self.config.max_message_size + 65536,
                                                 64 * 1024 * 1024))
        self.sock.bind(self.config.bind)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._start_results()
        bindings = self.config.data_dir / "bindings.msgpack"
        if bindings.exists():
            try:
                self.bindings.declare(protocol.unpack(bindings.read_bytes()))
            except Exception as exc:
                logger.error("ignoring unreadable %s: %s", bindings, exc)
        self.journal = Journal(self.config.data_dir / "journal.log",
                               fsync=self.config.journal_fsync)
        live, revoked = self.journal.open()
        for task_id in revoked:
            self.revoked[task_id] = None
        now = time.time()
        for raw_header, body in live:
            header = protocol.unpack(raw_header)
            entry = Entry(header, raw_header, body)
            self._track(entry)
            self._place(entry, now)
        if live:
            logger.info("replayed %d accepted tasks from the journal", len(live))
            self._dispatch_after = time.monotonic() + self.config.resync_grace_s
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.results_process.sentinel, zmq.POLLIN)
        if self.wakeup is not None:
            self.poller.register(self.wakeup.fd, zmq.POLLIN)
        if self.journal.wakeup_fd is not None:
            self.poller.register(self.journal.wakeup_fd, zmq.POLLIN)
        logger.info("router %s listening on %s", self.epoch, self.endpoint)

    def teardown(self) -> None:
        try:
            self._flush_events()
            self.journal.close()
            if self.journal.error is None:
                self._answer()  # everything is on disk now
            elif self._held:
                logger.critical("not answering %d requests: the journal could not be synced",
                                len(self._held))
        finally:
            self.sock.close(linger=500)  # the last answers leave
            self._stop_children()

    def _stop_children(self) -> None:
        self.results_push.close(linger=0)
        if self.results_process.is_alive():
            self.results_process.terminate()
            self.results_process.join(5)
            if self.results_process.is_alive():
                self.results_process.kill()
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()

    def run(self) -> None:
        self.setup()
        try:
            while not self.stopping:
                self.step(0.5)
        finally:
            self.teardown()

    def _start_results(self) -> None:
        if self.config.bind.startswith("ipc://"):
            base = self.config.bind
            wanted = {k: f"{base}.results-{k}" for k in ("ingest", "query", "pub")}
        else:
            # The same ports as last time where they are free, so that clients and
            # workers connected before a restart reconnect without being told.
            host = self.endpoint.rsplit(":", 1)[0]
            wanted = {k: f"{host}:*" for k in ("ingest", "query", "pub")}
            remembered = getattr(self, "results_endpoints", None) or self._remembered()
            if remembered and all(v.startswith(host + ":") for v in remembered.values()):
                wanted = dict(remembered)
        cfg = results.ResultsConfig(
            ingest=wanted["ingest"], query=wanted["query"], pub=wanted["pub"],
            data_dir=None if self.config.results_backend == "memory" else self.config.data_dir,
            backend=self.config.results_backend,
            result_expires_s=self.config.result_expires_s,
            curve_secret_key=self.config.curve_secret_key,
            curve_authorized_dir=self.config.curve_authorized_dir)
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe(duplex=False)
        self.results_process = mp.Process(target=results.main, name="zq-results",
                                          args=(cfg, child, self.config.log_level), daemon=True)
        self.results_process.start()
        child.close()
        if not parent.poll(30):
            self.results_process.kill()
            raise RuntimeError("the results actor did not start within 30 s")
        self.results_endpoints: dict[str, str] = parent.recv()
        parent.close()
        (self.config.data_dir / "results-endpoints.msgpack").write_bytes(
            protocol.pack(self.results_endpoints))
        if hasattr(self, "results_push"):
            self.results_push.close(linger=0)
        self.results_push = self.ctx.socket(zmq.PUSH)
        if self.keys is not None:
            # The router is the results actor's client, with its own key pair.
            security.secure_client(self.results_push, security.ClientKeys(
                self.keys.public_key, self.keys.secret_key, self.keys.public_key))
        self.results_push.linger = 0
        self.results_push.sndhwm = 0
        self.results_push.connect(reachable(self.results_endpoints["ingest"], self.endpoint))

    def _remembered(self) -> dict[str, str] | None:
        path = self.config.data_dir / "results-endpoints.msgpack"
        try:
            found = protocol.unpack(path.read_bytes())
        except (OSError, ValueError):
            return None
        if isinstance(found, dict) and set(found) == {"ingest", "query", "pub"}:
            return found
        return None

    # -- the loop -----------------------------------------------------------------------

    def step(self, timeout_s: float) -> None:
        now = time.time()
        if self.timers:
            timeout_s = max(0.0, min(timeout_s, self.timers[0][0] - now))
        if self.expiries:
            timeout_s = max(0.0, min(timeout_s, self.expiries[0][0] - now))
        if self._events:
            timeout_s = min(timeout_s, _EVENT_FLUSH_S)
        ready = dict(self.poller.poll(timeout_s * 1000))
        if self.wakeup is not None and self.wakeup.fd in ready:
            self.wakeup.drain()
        if self.journal.wakeup_fd is not None and self.journal.wakeup_fd in ready:
            _drain_fd(self.journal.wakeup_fd)
            if self.journal.error is not None:
                raise JournalFailed(f"the journal could not be synced: {self.journal.error}")
        handled = self._drain() if self.sock in ready else 0
        if self.results_process.sentinel in ready and not self.results_process.is_alive():
            logger.error("the results actor exited with %s; restarting it",
                         self.results_process.exitcode)
            self.poller.unregister(self.results_process.sentinel)
            self._start_results()
            self.poller.register(self.results_process.sentinel, zmq.POLLIN)
        now = time.time()
        self._fire_timers(now)
        self._fire_expiries(now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + 1.0
            self._housekeeping(now)
        self.journal.commit()
        self._answer()
        if self._dirty and time.monotonic() >= self._dispatch_after:
            self._dirty = False
            self._dispatch()
        if self._events and (not handled
                             or time.monotonic() - self._last_flush >= _EVENT_FLUSH_S):
            self._flush_events()

    def _answer(self) -> None:
        """Send this step's replies. With ``journal_fsync`` an answer that promises
        durability (ACCEPTED, a control REPLY) waits for the sync covering the journal as
        written now, and a task accepted is handed out only then; those answers leave in
        order. Everything else goes at once."""
        written = self.journal.written
        synced = self.journal.synced
        for identity, msg in self._replies:
            if (written > synced or self._held) and msg.cmd in _DURABLE_REPLIES:
                self._held.append((written, identity, msg))
            else:
                self._send(identity, msg)
        self._replies.clear()
        while self._held and self._held[0][0] <= synced:
            _, identity, msg = self._held.popleft()
            self._send(identity, msg)
        while self._syncing and self._syncing[0][0] <= synced:
            entry = self._syncing.popleft()[1]
            if entry.state == SYNCING:
                self._place(entry, time.time())

    def _drain(self) -> int:
        """Handle the messages waiting on the socket (up to a batch); returns how many."""
        count = 0
        for identity, msg in protocol.drain(self.sock, _BATCH, routed=True,
                                            on_error=self._refuse):
            count += 1
            assert identity is not None
            try:
                self._handle(identity, msg)
            except Exception as exc:
                logger.exception("error handling %s from %r", msg.cmd.value, identity)
                self._replies.append((identity, protocol.error(
                    f"router error handling {msg.cmd.value}: {exc}", kind="ZqError")))
        return count

    def _refuse(self, identity: bytes | None, exc: ProtocolError) -> None:
        logger.warning("malformed message from %r: %s", identity, exc)
        if identity is not None:
            self._replies.append((identity, protocol.error(str(exc))))

    def _handle(self, identity: bytes, msg: Message) -> None:
        handler = self._HANDLERS.get(msg.cmd)
        if handler is None:
            logger.warning("unexpected %s from %r", msg.cmd.value, identity)
            self._replies.append((identity, protocol.error(
                f"the router does not take {msg.cmd.value}")))
            return
        handler(self, identity, msg)

    def _send(self, identity: bytes, msg: Message) -> bool:
        try:
            protocol.send(self.sock, msg, identity=identity)
            return True
        except zmq.ZMQError as exc:
            logger.debug("peer %r unreachable (%s); dropping %s", identity, exc, msg.cmd.value)
            return False

    # -- clients ------------------------------------------------------------------------

    def _on_submit(self, identity: bytes, msg: Message) -> None:
        """One task, or with a ``tasks`` list a batch ([header bytes, body] pairs)."""
        batch = msg.header.get("tasks")
        if batch is None:
            error = self._accept(identity, msg.header, msg.raw_header, msg.body)
            if error is None:
                self._replies.append((identity, Message(Cmd.ACCEPTED, {"id": msg.header["id"]})))
            else:
                self._replies.append((identity, error))
            return
        batch_id = msg.header.get("id")
        if not isinstance(batch, list) or not isinstance(batch_id, str):
            self._replies.append((identity, protocol.error(
                "a batch needs an 'id' string and 'tasks': a list of [header, body] pairs")))
            return
        accepted, errors = [], []
        for item in batch:
            try:
                raw_header, body = item
                header = protocol.unpack(raw_header)
                if not isinstance(header, dict) or not isinstance(body, bytes):
                    raise ValueError("not a [header map, body bytes] pair")
            except Exception as exc:
                errors.append([None, "ProtocolError", f"malformed batch item: {exc}"])
                continue
            error = self._accept(identity, header, raw_header, body)
            if error is None:
                accepted.append(header["id"])
            else:
                errors.append([error.header.get("id"), error.header["error"],
                               error.header["message"]])
        self._replies.append((identity, Message(Cmd.ACCEPTED, {
            "id": batch_id, "ids": accepted, "errors": errors})))

    def _accept(self, identity: bytes, header: dict[str, Any], raw_header: bytes | None,
                body: bytes) -> Message | None:
        """Journal and place one task; returns the error to answer with, or None."""
        problem = _task_header_problem(header)
        task_id = header.get("id") if isinstance(header.get("id"), str) else None
        kind = "ProtocolError"
        if problem is None and len(body) > self.config.max_message_size:
            problem = (f"task {task_id} is {len(body)} bytes, over the router's "
                       f"max_message_size of {self.config.max_message_size}")
            kind = "PublishError"
        if problem is not None:
            logger.warning("refusing task from %r: %s", identity, problem)
            return protocol.error(problem, kind=kind, task_id=task_id)
        entry = Entry(header, raw_header, body)
        if self._known(entry):
            return None  # a resend after a lost answer: accepted already
        queues = [entry.queue] if entry.queue else self.bindings.route(
            header.get("exchange", ""), header.get("rk"))
        if len(queues) > 1 and any(self._known_uid(copy_id(entry.id, name), entry.retries)
                                   for name in queues):
            return None  # a resend (after a router restart, too): its copies are here
        if not queues:
            where = f"exchange {header.get('exchange')!r} with routing key {header.get('rk')!r}"
            if header.get("mandatory"):
                return protocol.error(f"no queue is bound for {where}", kind="NoRoute",
                                      task_id=task_id)
            # Not dropped in silence as AMQP would: it fails where everyone can see.
            self._failure_event(entry, "NoRoute", f"no queue is bound for {where}")
            self._remember_finished(entry.key)
            return None
        for name in queues:
            if header.get("immediate") and not any(
                    a.credit > 0 and name in a.queues for a in self.actors.values()):
                return protocol.error(f"no worker consuming queue {name!r} can take the "
                                      f"task now (immediate=True)", kind="NoRoute",
                                      task_id=task_id)
            queue = self.queues.get(name)
            limit = self.config.max_queue_length
            if limit is not None and queue is not None and queue.size >= limit:
                return protocol.error(f"queue {name!r} holds {queue.size} tasks, its limit "
                                      f"(max_queue_length)", kind="QueueFull", task_id=task_id)
        if entry.id in self.revoked:
            self._revoked_event(entry, "revoked")
            self._remember_finished(entry.key)
            return None
        if "rate_limit" in header and entry.name not in self._rate_overrides:
            try:
                self._set_rate(entry.name, parse_rate(header["rate_limit"]))
            except ValueError as exc:
                return protocol.error(str(exc), kind="PublishError", task_id=task_id)
        if not header.get("ignore_result") and not entry.retries:
            # A retry keeps showing RETRY until its next attempt starts, as in Celery.
            self._event(entry, states.SENT, queue=",".join(queues))
        if len(queues) == 1:
            if not entry.queue:
                entry.queue = queues[0]
                entry.set_header(queue=queues[0])  # delivery_info and retries name it
            self._admit(entry)
            return None
        # Routed to several queues: one copy each, tracked apart (a copy retries, fails or
        # is redelivered on its own); all of them carry the task's id.
        self._remember_finished(entry.key)
        for name in queues:
            copy = Entry(dict(header, queue=name, copy_id=copy_id(entry.id, name)), None, body)
            if not self._known(copy):
                self._admit(copy)
        return None

    def _known(self, entry: Entry) -> bool:
        """Whether this attempt of the task was accepted already (a resend)."""
        return self._known_uid(entry.uid, entry.retries)

    def _known_uid(self, uid: str, retries: int) -> bool:
        known = self.tasks.get(uid)
        return (known is not None and known.retries >= retries) \
            or _attempt(uid, retries) in self.finished

    def _admit(self, entry: Entry) -> None:
        """Journal a routed task and place it: from here on it is never lost."""
        entry.accepted_at = time.time()
        if entry.raw_header is None:
            entry.raw_header = protocol.pack(entry.header)
        self.journal.accepted(entry.raw_header, entry.body)
        self._track(entry)
        if self.journal.fsync:
            # Handed out once on disk: a task must not run (and finish) before the
            # record of its acceptance could survive a crash.
            entry.state = SYNCING
            self._syncing.append((self.journal.written + 1, entry))
        else:
            self._place(entry, entry.accepted_at)

    def _track(self, entry: Entry) -> None:
        self.tasks[entry.uid] = entry
        if entry.uid != entry.id:
            self.copies.setdefault(entry.id, set()).add(entry.uid)

    def _on_hello(self, identity: bytes, msg: Message) -> None:
        self._replies.append((identity, Message(Cmd.WELCOME, self._welcome(msg))))

    def _welcome(self, msg: Message) -> dict[str, Any]:
        header: dict[str, Any] = {"results": self.results_endpoints, "epoch": self.epoch}
        if "rid" in msg.header:
            header["rid"] = msg.header["rid"]
        return header

    def _on_control(self, identity: bytes, msg: Message) -> None:
        op = msg.header.get("op")
        reply: dict[str, Any] = {"rid": msg.header.get("rid")}
        if op == "stats":
            reply.update(self.stats())
        elif op == "rate_limit":
            name = msg.header.get("task")
            try:
                rate = parse_rate(msg.header.get("rate_limit"))
            except ValueError as exc:
                self._replies.append((identity, _control_error(msg, str(exc))))
                return
            if not isinstance(name, str) or not name:
                self._replies.append((identity, _control_error(msg, "rate_limit needs 'task'")))
                return
            self._rate_overrides[name] = rate
            self._set_rate(name, rate)
            reply["ok"] = True
        elif op == "revoke":
            ids = msg.header.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                self._replies.append((identity, _control_error(msg, "revoke needs 'ids'")))
                return
            self._revoke(ids, bool(msg.header.get("terminate")),
                         str(msg.header.get("signal") or "SIGTERM"))
            reply["ok"] = True
        elif op == "declare":
            try:
                self._declare(msg.header.get("queues"))
            except ValueError as exc:
                self._replies.append((identity, _control_error(msg, str(exc))))
                return
            reply["ok"] = True
        elif op == "purge":
            queue = msg.header.get("queue")
            purged = 0
            for name, q in self.queues.items():
                if queue is None or name == queue:
                    for entry in q.drain():
                        self._finish(entry)
                        purged += 1
            reply["purged"] = purged
        else:
            self._replies.append((identity, _control_error(
                msg, f"unknown control operation {op!r}")))
            return
        self._replies.append((identity, Message(Cmd.REPLY, reply)))

    def _revoke(self, ids: list[str], terminate: bool, signal_name: str) -> None:
        """Waiting tasks never run; prefetched ones are taken back; with ``terminate`` the
        process running one is killed. The ids stay revoked (bounded, journaled)."""
        pulls: dict[bytes, list[str]] = {}
        for task_id in ids:
            self.revoked[task_id] = None
            self.revoked.move_to_end(task_id)
            if len(self.revoked) > _REVOKED_KEPT:
                self.revoked.popitem(last=False)
            self.journal.revoked(task_id)
            for entry in self._entries(task_id):
                self._revoke_entry(entry, terminate, signal_name, pulls)
        for identity, pulled in pulls.items():
            self._replies.append((identity, Message(Cmd.CONTROL, {"op": "revoke",
                                                                   "ids": pulled})))

    def _entries(self, task_id: str) -> list[Entry]:
        """The accepted, unfinished entries of a task: itself, or each of its copies."""
        uids = [task_id, *self.copies.get(task_id, ())]
        return [entry for uid in uids if (entry := self.tasks.get(uid)) is not None]

    def _revoke_entry(self, entry: Entry, terminate: bool, signal_name: str,
                      pulls: dict[bytes, list[str]]) -> None:
        if entry.state in (QUEUED, SCHEDULED, SYNCING):
            if entry.state == QUEUED:
                self.queues[entry.queue].discard(entry)
            self._revoked_event(entry, "revoked")
            self._finish(entry)
        elif entry.state == INFLIGHT:
            for actor in self.actors.values():
                if entry.key not in actor.inflight:
                    continue
                if next(iter(actor.inflight)) != entry.key:
                    pulls.setdefault(actor.identity, []).append(entry.id)
                elif terminate:
                    self._terminate(actor, signal_name, entry)

    def _terminate(self, actor: ActorState, signal_name: str, entry: Entry) -> None:
        if not actor.supervised:
            logger.warning("cannot terminate a task on actor %r: it has no supervisor",
                           actor.identity)
            return
        # A supervisor's identity is its host name, which its actors announce. It kills
        # the actor unless that is running another task by then (this one ended).
        self._replies.append((actor.host.encode(), Message(Cmd.CONTROL, {
            "op": "kill", "actor": actor.identity, "signal": signal_name,
            "task": protocol.attempt_label(entry.uid, entry.retries)})))

    def _revoked_event(self, entry: Entry, why: str) -> None:
        self._event(entry, states.REVOKED, exc=exception_data(
            "TaskRevokedError", f"task {entry.id} {why}", args=[why]))

    def _declare(self, decls: Any) -> None:
        if self.bindings.declare(decls):
            path = self.config.data_dir / "bindings.msgpack"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(protocol.pack(self.bindings.to_list()))
            tmp.replace(path)

    def stats(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "actors": len(self.actors),
            "hosts": sorted(self.hosts),
            "queued": {name: q.size for name, q in self.queues.items() if q.size},
            "scheduled": sum(1 for _, _, e in self.timers if e.state == SCHEDULED),
            "inflight": sum(len(a.inflight) for a in self.actors.values()),
            "tasks": len(self.tasks),
            # Journal commits written (one per step that recorded something) and fsyncs
            # (with --journal-fsync: each covers every commit written before it began).
            "journal": {"writes": self.journal.written, "syncs": self.journal.syncs},
        }

    # -- actors and supervisors ---------------------------------------------------------

    def _on_ready(self, identity: bytes, msg: Message) -> None:
        h = msg.header
        queues = h.get("queues")
        credit = h.get("credit")
        holding = h.get("holding") or []
        if not (isinstance(queues, list) and queues and all(isinstance(q, str) for q in queues)
                and isinstance(credit, int) and not isinstance(credit, bool) and credit >= 0
                and isinstance(holding, list)
                and all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
                        and isinstance(x[1], int) for x in holding)):
            self._replies.append((identity, protocol.error(
                "READY needs 'queues' (a list of names), 'credit' (an integer >= 0) and "
                "'holding' (a list of [task id, retries])")))
            return
        actor = self.actors.get(identity)
        if actor is None:
            actor = ActorState(identity, str(h.get("host", "")), int(h.get("pid", 0)),
                               tuple(queues), credit, bool(h.get("supervised")), time.time())
            self.actors[identity] = actor
            logger.info("actor %s ready for %s with credit %d", identity.decode(errors="replace"),
                        ",".join(queues), credit)
        else:
            actor.queues, actor.credit = tuple(queues), credit
            actor.placeholder = False
        # Held tasks the router places elsewhere by now (handed out again after a restart
        # while this actor was busy) or that finished: the actor must drop them.
        disowned = [[uid, retries] for uid, retries in holding
                    if not self._claim(actor, uid, retries)]
        if h.get("declare"):
            try:
                self._declare(h["declare"])
            except ValueError as exc:
                logger.error("actor %r declared bad bindings: %s", identity, exc)
        if actor.supervised and actor.host not in self.hosts:
            self.hosts[actor.host] = HostState(actor.host, b"", time.time())
        welcome = self._welcome(msg)
        if disowned:
            logger.warning("actor %s holds %d task(s) placed elsewhere or finished; it drops "
                           "them", identity.decode(errors="replace"), len(disowned))
            welcome["drop"] = disowned
        self._replies.append((identity, Message(Cmd.WELCOME, welcome)))
        self._set_hungry(actor)

    def _claim(self, actor: ActorState, uid: str, retries: int) -> bool:
        """An actor re-announcing after a router restart holds this task: keep it there.
        False when it may not run it: finished, or handed to another actor meanwhile."""
        entry = self.tasks.get(uid)
        if entry is None or entry.retries != retries:
            return False
        if entry.state == INFLIGHT:
            return actor.inflight.get(entry.key) is entry
        if entry.state == QUEUED:
            self.queues[entry.queue].discard(entry)
        entry.state = INFLIGHT
        actor.inflight[entry.key] = entry
        return True

    def _on_done(self, identity: bytes, msg: Message) -> None:
        """One finished task, or with ``done`` a list of them; each returns one credit."""
        actor = self.actors.get(identity)
        records = msg.header.get("done")
        if actor is None:
            # From before a router restart (queued in the actor's socket while the router
            # was down): the tasks are done, so the journal's replayed copies must not run.
            for record in records if isinstance(records, list) else [msg.header]:
                if isinstance(record, dict):
                    event = record.get("event")
                    if event is not None and protocol.event_problem(event) is None:
                        self._events.append(event)
                    self._late_done(record)
            self._replies.append((identity, Message(Cmd.RESYNC)))
            return
        for record in records if isinstance(records, list) else [msg.header]:
            if isinstance(record, dict):
                self._done_one(actor, record)
        if actor.placeholder:
            actor.credit = 0
            self._replies.append((identity, Message(Cmd.RESYNC)))
            return
        self._set_hungry(actor)

    def _done_one(self, actor: ActorState, record: dict[str, Any]) -> None:
        key = (record.get("id"), record.get("retries", 0))
        entry = actor.inflight.pop(key, None)  # type: ignore[call-overload]
        actor.credit += 1
        event = record.get("event")
        if event is not None and protocol.event_problem(event) is None:
            # Forwarded even for a task given up on: the results actor keeps the first
            # final state of an attempt, so a late result is never applied twice.
            self._events.append(event)
        if entry is None:
            self._late_done(record)
            return
        if record.get("requeue"):
            started = bool(record.get("started"))
            limit = entry.header.get("max_redeliveries", 3)
            if started and entry.redeliveries >= limit:
                self._fail(entry, "Reject", f"the task rejected itself {entry.redeliveries + 1} "
                                            f"times (max_redeliveries={limit}); not requeued again")
            else:
                self._requeue(entry, redelivered=started)
        else:
            self._finish(entry)

    def _late_done(self, record: dict[str, Any]) -> None:
        """A DONE for a task the router no longer places with that actor (it gave the actor
        up, or restarted): if the task finished, its queued copy need not run. A task
        handed back unfinished (requeue) keeps its copy."""
        if record.get("requeue"):
            return
        uid, retries = record.get("id"), record.get("retries", 0)
        entry = self.tasks.get(uid) if isinstance(uid, str) else None
        if entry is not None and entry.retries == retries and entry.state in (QUEUED, SCHEDULED):
            if entry.state == QUEUED:
                self.queues[entry.queue].discard(entry)
            self._finish(entry)

    def _on_events(self, identity: bytes, msg: Message) -> None:
        """State changes reported by an actor while its task runs: forwarded in order."""
        if identity not in self.actors:
            self._replies.append((identity, protocol.error(
                "EVENTS are taken from actors only; clients send them to the results actor")))
            return
        events = msg.header.get("events")
        if not isinstance(events, list):
            self._replies.append((identity, protocol.error("EVENTS needs an 'events' list")))
            return
        for event in events:
            problem = protocol.event_problem(event)
            if problem:
                logger.warning("dropping event from actor %r: %s", identity, problem)
            else:
                self._events.append(event)

    def _on_heartbeat(self, identity: bytes, msg: Message) -> None:
        host = msg.header.get("host")
        if "actors" in msg.header:
            actors = msg.header["actors"]
            if not (isinstance(host, str) and host and isinstance(actors, list)
                    and all(isinstance(a, (str, bytes)) for a in actors)):
                self._replies.append((identity, protocol.error(
                    "a supervisor HEARTBEAT needs 'host' (a string) and 'actors' (a list)")))
                return
            now = time.time()
            state = self.hosts.get(host)
            if state is None:
                state = self.hosts[host] = HostState(host, identity, now)
            state.identity, state.last_seen = identity, now
            alive = {a.encode() if isinstance(a, str) else a for a in msg.header["actors"]}
            self._adopt_running(host, msg.header.get("running"), alive, now)
            for actor in [a for a in self.actors.values() if a.host == host]:
                if (actor.identity not in alive and now - actor.registered_at > 2.0
                        and actor.departed_at is None):
                    self._actor_lost(actor.identity, "not among its supervisor's actors")
        elif identity not in self.actors:
            self._replies.append((identity, Message(Cmd.RESYNC)))

    def _adopt_running(self, host: str, running: Any, alive: set[bytes], now: float) -> None:
        """Tasks that busy actors of ``host`` are running, as their supervisor reports
        them: an actor the router does not know yet (it restarted while the task ran) is
        recorded as holding its task, so that the journal's copy is not run again."""
        if not isinstance(running, list):
            return
        for item in running:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], str)
                    and isinstance(item[2], int)):
                continue
            identity = item[0].encode() if isinstance(item[0], str) else item[0]
            if not isinstance(identity, bytes) or identity not in alive \
                    or identity in self.actors:
                continue
            actor = ActorState(identity, host, 0, (), 0, True, now, placeholder=True)
            self.actors[identity] = actor
            self._claim(actor, item[1], item[2])

    def _on_lost(self, identity: bytes, msg: Message) -> None:
        """A supervisor reports one of its actors dead; nobody else may."""
        actor = msg.header.get("actor")
        if isinstance(actor, str):
            actor = actor.encode()
        if not isinstance(actor, bytes):
            self._replies.append((identity, protocol.error("LOST needs 'actor', an identity")))
            return
        state = self.actors.get(actor)
        if state is None:
            return  # gone already, or never announced: nothing held to act on
        # A supervisor's identity is its host name, which its actors announce.
        if state.supervised and identity != state.host.encode():
            logger.warning("ignoring LOST for %r from %r, which is not its supervisor",
                           actor, identity)
            self._replies.append((identity, protocol.error(
                "LOST is taken only from the actor's own supervisor")))
            return
        if msg.header.get("clean"):
            # A clean exit: its DONEs and BYE travel on its own socket and may still be on
            # their way; wait for the BYE rather than judge its tasks now.
            state.departed_at = time.time()
            state.credit = 0
            self.hungry.pop(actor, None)
            return
        self._actor_lost(actor, str(msg.header.get("reason", "exited")),
                         msg.header.get("error"))

    def _on_bye(self, identity: bytes, msg: Message) -> None:
        """An actor's last word: every DONE came before it, so nothing it holds started.
        From a supervisor: its host leaves, and whatever its actors still hold is judged."""
        host = msg.header.get("host")
        if isinstance(host, str) and identity == host.encode() and host in self.hosts:
            del self.hosts[host]
            # An actor already seen exiting cleanly is settled by its own BYE (its DONEs
            # travel on its socket and may still be on their way), or by housekeeping.
            for actor in [a for a in self.actors.values()
                          if a.host == host and a.departed_at is None]:
                self._actor_lost(actor.identity, "its worker host shut down")
            logger.info("host %s left", host)
            return
        actor = self.actors.pop(identity, None)
        self.hungry.pop(identity, None)
        if actor is None:
            return
        logger.info("actor %s left", identity.decode(errors="replace"))
        for entry in reversed(actor.inflight.values()):
            self._enqueue(entry, front=True)

    def _actor_lost(self, identity: bytes, reason: str, error: str | None = None) -> None:
        """Celery's rules for the tasks of a dead actor; prefetched ones always go back."""
        actor = self.actors.pop(identity, None)
        self.hungry.pop(identity, None)
        if actor is None:
            return
        logger.warning("actor %s lost (%s) holding %d task(s)",
                       identity.decode(errors="replace"), reason, len(actor.inflight))
        for position, entry in enumerate(actor.inflight.values()):
            if position > 0:  # prefetched, never started
                self._requeue(entry, redelivered=False)
                continue
            if entry.id in self.revoked:
                self._revoked_event(entry, "revoked and terminated")
                self._finish(entry)
                continue
            if error == "TimeLimitExceeded":
                limit = entry.header.get("time_limit")
                self._fail(entry, "TimeLimitExceeded",
                           f"TimeLimitExceeded({limit if limit is not None else ''}): the task "
                           f"ran past its hard time limit and its process was killed")
                continue
            late = entry.acks_late and entry.header.get("reject_on_worker_lost") is not False
            limit = entry.header.get("max_redeliveries", 3)
            if late and entry.redeliveries < limit:
                self._requeue(entry, redelivered=True)
            elif late:
                self._fail(entry, "WorkerLostError",
                           f"Worker exited prematurely ({reason}); the task was redelivered "
                           f"{entry.redeliveries} times (max_redeliveries={limit}) and is "
                           f"not tried again")
            else:
                self._fail(entry, "WorkerLostError", f"Worker exited prematurely: {reason}")

    def _housekeeping(self, now: float) -> None:
        for actor in [a for a in self.actors.values()
                      if a.departed_at is not None and now - a.departed_at > 2.0]:
            self._actor_lost(actor.identity, "exited without saying goodbye")
        for host in [h for h in self.hosts.values()
                     if now - h.last_seen > self.config.host_timeout_s]:
            logger.warning("host %s silent for %.1fs: its actors are lost", host.host,
                           now - host.last_seen)
            del self.hosts[host.host]
            for actor in [a for a in self.actors.values() if a.host == host.host]:
                self._actor_lost(actor.identity, f"host {host.host} lost")
        if len(self.expiries) > 2 * len(self.tasks) + 1000:
            self.expiries = [(e.expires, e.uid, e.retries) for e in self.tasks.values()
                             if e.expires is not None and e.state == QUEUED]
            heapq.heapify(self.expiries)
        if self.journal.should_compact():
            self.journal.compact([(e.raw_header or protocol.pack(e.header), e.body)
                                  for e in self.tasks.values()], list(self.revoked))

    # -- task placement -----------------------------------------------------------------

    def _place(self, entry: Entry, now: float) -> None:
        if entry.expires is not None and entry.expires <= now:
            self._expire(entry)
        elif entry.eta is not None and entry.eta > now:
            entry.state = SCHEDULED
            heapq.heappush(self.timers, (entry.eta, next(self._timer_seq), entry))
        else:
            self._enqueue(entry)

    def _enqueue(self, entry: Entry, front: bool = False) -> None:
        if entry.id in self.revoked:
            # Handed back (prefetched, its actor gone) after a revoke the actor never read.
            self._revoked_event(entry, "revoked")
            self._finish(entry)
            return
        queue = self.queues.get(entry.queue)
        if queue is None:
            queue = self.queues[entry.queue] = TaskQueue(entry.queue)
        queue.push(entry, front=front)
        if entry.expires is not None:
            heapq.heappush(self.expiries, (entry.expires, entry.uid, entry.retries))
        self._dirty = True

    def _fire_expiries(self, now: float) -> None:
        while self.expiries and self.expiries[0][0] <= now:
            _, uid, retries = heapq.heappop(self.expiries)
            entry = self.tasks.get(uid)
            if entry is not None and entry.retries == retries and entry.state == QUEUED:
                self.queues[entry.queue].discard(entry)
                self._expire(entry)

    def _fire_timers(self, now: float) -> None:
        while self.timers and self.timers[0][0] <= now:
            _, _, entry = heapq.heappop(self.timers)
            if entry.state == SCHEDULED:
                if entry.rate_slot:
                    self._enqueue(entry, front=True)
                else:
                    self._place(entry, now)

    def _requeue(self, entry: Entry, redelivered: bool) -> None:
        if redelivered:
            entry.redeliveries += 1
            entry.set_header(redelivered=True, redeliveries=entry.redeliveries)
        self._enqueue(entry, front=True)

    def _finish(self, entry: Entry) -> None:
        entry.state = DEAD
        if self.tasks.get(entry.uid) is entry:
            del self.tasks[entry.uid]
            if entry.uid != entry.id:
                copies = self.copies.get(entry.id)
                if copies is not None:
                    copies.discard(entry.uid)
                    if not copies:
                        del self.copies[entry.id]
        self.journal.finished(entry.uid, entry.retries)
        self._remember_finished(entry.key)

    def _remember_finished(self, key: tuple[str, int]) -> None:
        """Recent finished attempts: a resend or a late DONE of one is recognised."""
        self.finished.add(_attempt(*key))

    def _fail(self, entry: Entry, kind: str, message: str) -> None:
        self._failure_event(entry, kind, message)
        self._finish(entry)

    def _failure_event(self, entry: Entry, kind: str, message: str) -> None:
        self._event(entry, states.FAILURE, exc=exception_data(kind, message))

    def _expire(self, entry: Entry) -> None:
        self._revoked_event(entry, "expired before it could run")
        self._finish(entry)

    # -- dispatch -----------------------------------------------------------------------

    def _set_hungry(self, actor: ActorState) -> None:
        if actor.credit > 0:
            self.hungry[actor.identity] = actor
            self._dirty = True
        else:
            self.hungry.pop(actor.identity, None)

    def _dispatch(self) -> None:
        """Hand out tasks one per hungry actor per round, so credit spreads work evenly;
        what one actor gets in a dispatch travels in one message."""
        now = time.time()
        batches: dict[bytes, list[Entry]] = {}
        progress = True
        while progress and self.hungry:
            progress = False
            for actor in list(self.hungry.values()):
                entry = self._next_for(actor, now)
                if entry is None:
                    continue
                progress = True
                entry.state = INFLIGHT
                actor.inflight[entry.key] = entry
                batches.setdefault(actor.identity, []).append(entry)
                actor.credit -= 1
                if actor.credit <= 0:
                    del self.hungry[actor.identity]
        for identity, entries in batches.items():
            self._deliver(self.actors[identity], entries)

    def _next_for(self, actor: ActorState, now: float) -> Entry | None:
        for name in actor.queues:
            queue = self.queues.get(name)
            while queue is not None and queue.size:
                entry = queue.pop()
                if entry is None:
                    break
                if entry.expires is not None and entry.expires <= now:
                    self._expire(entry)
                    continue
                limiter = self.limiters.get(entry.name)
                if limiter is not None and not entry.rate_slot:
                    slot = limiter.reserve(now)
                    if slot > now:
                        # Its turn under the rate limit comes later: wait in the timers.
                        entry.rate_slot = True
                        entry.state = SCHEDULED
                        heapq.heappush(self.timers, (slot, next(self._timer_seq), entry))
                        continue
                entry.rate_slot = False
                return entry
        return None

    def _set_rate(self, name: str, per_second: float | None) -> None:
        if self._rates.get(name, -1.0) == per_second:
            return
        self._rates[name] = per_second
        if per_second is None:
            self.limiters.pop(name, None)
        else:
            self.limiters[name] = RateLimiter(per_second)

    def _deliver(self, actor: ActorState, entries: list[Entry]) -> None:
        if len(entries) == 1:
            entry = entries[0]
            msg = Message(Cmd.TASK, entry.header, entry.body, entry.raw_header)
        else:
            msg = Message(Cmd.TASK, {"tasks": [[e.raw_header or protocol.pack(e.header), e.body]
                                               for e in entries]})
        if self._send(actor.identity, msg):
            return
        for entry in reversed(entries):
            actor.inflight.pop(entry.key, None)
            self._enqueue(entry, front=True)
        self._actor_lost(actor.identity, "unreachable")

    # -- events to the results actor ----------------------------------------------------

    def _event(self, entry: Entry, state: str, **extra: Any) -> None:
        if entry.uid != entry.id:
            extra["copy"] = entry.uid
        self._events.append(protocol.state_event(entry.id, state, retries=entry.retries,
                                                 name=entry.name, **extra))

    def _flush_events(self) -> None:
        if not self._events:
            return
        self._last_flush = time.monotonic()
        try:
            protocol.send(self.results_push, Message(Cmd.EVENTS, {"events": self._events}),
                          flags=zmq.NOBLOCK)
        except zmq.Again:
            logger.error("results actor not taking events; %d dropped", len(self._events))
        self._events = []

    _HANDLERS = {
        Cmd.SUBMIT: _on_submit, Cmd.HELLO: _on_hello, Cmd.CONTROL: _on_control,
        Cmd.READY: _on_ready, Cmd.DONE: _on_done, Cmd.HEARTBEAT: _on_heartbeat,
        Cmd.LOST: _on_lost, Cmd.EVENTS: _on_events, Cmd.BYE: _on_bye,
    }


_DURABLE_REPLIES = frozenset({Cmd.ACCEPTED, Cmd.REPLY})


def _attempt(uid: str, retries: int) -> str | tuple[str, int]:
    """One attempt of a task as a key: a first attempt by its uid alone (no tuple)."""
    return uid if retries == 0 else (uid, retries)


class RecentKeys:
    """The most recent keys, kept in generations of plain sets: the newest takes keys,
    and when it is full the oldest of ``generations`` is dropped whole. Between
    ``generations - 1`` and ``generations`` times ``size`` keys are remembered, and no
    ever-churning table is rebuilt (an insertion-ordered dict popping its oldest key
    reallocates its table every so often, and the allocator keeps the old copies)."""

    def __init__(self, size: int, generations: int = 3):
        self.size = size
        self.generations: deque[set[Any]] = deque([set()], maxlen=generations)

    def add(self, key: Any) -> None:
        newest = self.generations[-1]
        newest.add(key)
        if len(newest) >= self.size:
            self.generations.append(set())

    def __contains__(self, key: Any) -> bool:
        return any(key in generation for generation in self.generations)

    def __len__(self) -> int:
        return sum(len(generation) for generation in self.generations)


class JournalFailed(Exception):
    """The journal could not be made durable: the router stops rather than answer."""


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def main(config: RouterConfig) -> None:
    """Run a router until SIGTERM or SIGINT; the journal is flushed on the way out."""
    router = Router(config, Wakeup())

    def stop(signum: int, frame: Any) -> None:
        router.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        router.run()
    except JournalFailed as exc:
        logger.critical("%s; stopping: restart the router to replay the journal", exc)
        raise SystemExit(3) from None
    logger.info("router stopped")
