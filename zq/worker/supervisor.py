"""The supervisor: owns the actor processes of one host.

It spawns N actor processes (spawn start method), notices a dead one at once through its
process sentinel, tells the router (which applies the rules for the task it held), and
starts a replacement. It heartbeats for the whole host with the list of its live actors,
so the router notices both a lost host and an actor whose death it was never told of.

Signals: SIGTERM or SIGINT is a warm shutdown (actors finish their task, hand back what
they prefetched, and exit; past ``shutdown_timeout_s`` they are killed); a second SIGTERM
or SIGQUIT is a cold shutdown (actors are killed now).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import psutil
import zmq

from .. import protocol
from .._proctitle import set_title
from .._signals import Wakeup
from ..protocol import Cmd, Message
from ..security import secure_client
from .actor import main as actor_main
from .config import WorkerConfig
from .execute import SharedBytes, SharedFloat
from .facts import FACTS_SIZE, SharedRaw, rusage, settings_conf, worker_conf
from .facts import read as read_facts
from .loader import load_app

logger = logging.getLogger("zq.supervisor")

EXIT_OK = 0
EXIT_COLD_SHUTDOWN = 2

_SPAWN = multiprocessing.get_context("spawn")
_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


@dataclass
class Child:
    """One actor process, with what it shares with the supervisor (see ``execute``)."""

    index: int
    generation: int
    identity: bytes
    process: BaseProcess
    deadline: SharedFloat
    current: SharedBytes
    facts: SharedRaw
    started_at: float = field(default_factory=time.monotonic)
    timed_out: bool = False
    # What it last published of itself (see zq.worker.facts), and its process to measure.
    reported: dict[str, Any] = field(default_factory=dict)
    measured: psutil.Process | None = None

    @property
    def busy(self) -> bool:
        """Whether it runs a task now (its label is an attempt's, not an ended one)."""
        label = bytes(self.current.value).decode(errors="replace")
        attempt = protocol.parse_attempt_label(label)
        return attempt is not None and bool(attempt[0])

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process (started before it became a Child)."""
        if self.process.pid is not None:
            os.kill(self.process.pid, signum)


class Supervisor:
    """One host's actor processes: ``setup()``, ``step()`` until every child is gone after
    a stop, ``teardown()``."""

    def __init__(self, config: WorkerConfig, wakeup: Wakeup | None = None):
        self.config = config
        self.wakeup = wakeup
        self.host = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.cold = False
        self._shutdown_deadline: float | None = None
        self._restart_at: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}
        self._generation: dict[int, int] = {}
        self._next_heartbeat = 0.0
        self.started = time.time()
        # Changed by control (docs/operations.md): the indexes of new actors, actors told
        # to stop for good, the autoscale bounds (max, min), time limits per task name,
        # and queues per actor index.
        self._next_index = config.concurrency
        self._retiring: set[int] = set()
        self.autoscale: tuple[int, int] | None = config.autoscale
        self._quiet_beats = 0
        self.time_limits: dict[str, tuple[float | None, float | None]] = {}
        self.consumers: dict[int, tuple[str, ...]] = {}
        self.conf: dict[str, Any] = {}
        self.default_queues: tuple[str, ...] = config.queues

    def setup(self) -> None:
        app = load_app(self.config.app)  # fail here, once, clearly, not in N children
        settings = self.config.settings(app.settings)
        self.default_queues = self.config.queues or (settings.task_default_queue,)
        self.conf = {**settings_conf(settings), **worker_conf(self.config)}
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        secure_client(self.sock, settings.curve_keys())
        self.sock.identity = self.host.encode()
        self.sock.linger = 0
        self.sock.connect(self.config.router)
        for index in range(self.config.concurrency):
            self._spawn(index, 0)
        logger.info("supervisor %s started %d actors for %s", self.host,
                    self.config.concurrency, self.config.router)
        _banner(self.host, self.config.concurrency, self.config.router,
                self.config.queues or (app.settings.task_default_queue,), sorted(app.tasks))

    def teardown(self) -> None:
        for child in list(self.children.values()):
            if child.process.is_alive():
                child.process.kill()
            child.process.join(5)
            self._report_lost(child, "worker shut down")
        # This host is going away on purpose: the router need not wait for its heartbeats.
        try:
            protocol.send(self.sock, Message(Cmd.BYE, {"host": self.host}), flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            logger.warning("could not say goodbye to the router: %s", exc)
        self.sock.close(linger=1000)
        self.ctx.term()

    def run(self) -> int:
        self.setup()
        try:
            while self.children or not self.stopping:
                self.step(self.config.heartbeat_interval_s)
        finally:
            self.teardown()
        return EXIT_COLD_SHUTDOWN if self.cold else EXIT_OK

    def _spawn(self, index: int, generation: int) -> None:
        identity = f"{self.host}/{index}/{generation}".encode()
        cfg = self.config.for_actor(
            host=self.host, identity=identity, queues=self.consumers.get(index),
            time_limits=tuple((name, *limits) for name, limits in self.time_limits.items()))
        deadline: SharedFloat = _SPAWN.Value("d", 0.0, lock=False)
        # "uid\nretries": a task id and a queue name of up to 255 characters each, UTF-8.
        current: SharedBytes = _SPAWN.Array("c", 4096, lock=False)
        facts: SharedRaw = _SPAWN.Array("c", FACTS_SIZE, lock=False)
        process = _SPAWN.Process(target=actor_main, args=(cfg, deadline, current, facts),
                                 name=f"zq-actor-{index}", daemon=False)
        # The child starts with these signals blocked and unblocks them once its handlers
        # are in place, so a TERM during start-up cannot kill it half made.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        try:
            process.start()
            # Registered before the mask is lifted: a TERM that came in meanwhile runs the
            # shutdown handler next, and that must see this child to stop it too.
            self.children[index] = Child(index, generation, identity, process, deadline,
                                         current, facts)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def step(self, timeout_s: float) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self.wakeup is not None:
            poller.register(self.wakeup.fd, zmq.POLLIN)
        sentinels = {c.process.sentinel: c for c in self.children.values()}
        for fd in sentinels:
            poller.register(fd, zmq.POLLIN)
        now = time.monotonic()
        if self._restart_at:
            timeout_s = max(0.0, min(timeout_s, min(self._restart_at.values()) - now))
        deadlines = [c.deadline.value for c in self.children.values() if c.deadline.value]
        if deadlines:
            timeout_s = max(0.0, min(timeout_s, min(deadlines) - now))
        ready = dict(poller.poll(int(timeout_s * 1000)))
        if self.wakeup is not None and self.wakeup.fd in ready:
            self.wakeup.drain()
        if self.sock in ready:
            self._drain()
        for fd, child in sentinels.items():
            if fd in ready:
                child.process.join(0.1)
                if not child.process.is_alive():
                    self._on_exit(child)
        now = time.monotonic()
        self._enforce_time_limits(now)
        for index, when in list(self._restart_at.items()):
            if when <= now and not self.stopping:
                del self._restart_at[index]
                self._spawn(index, self._generation.get(index, 0) + 1)
        if self.stopping and self._shutdown_deadline is not None \
                and now >= self._shutdown_deadline:
            logger.warning("shutdown timeout passed; killing %d actors", len(self.children))
            self._kill_all()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_interval_s
            self._heartbeat()
            self._autoscale()

    def _enforce_time_limits(self, now: float) -> None:
        for child in self.children.values():
            deadline = child.deadline.value
            if deadline and now >= deadline and not child.timed_out and child.process.is_alive():
                logger.error("actor %d (pid %s) passed its task's hard time limit; killing it",
                             child.index, child.process.pid)
                child.timed_out = True
                child.process.kill()

    def _on_exit(self, child: Child) -> None:
        del self.children[child.index]
        code = child.process.exitcode
        reason = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
                  else f"exit code {code}")
        self._report_lost(child, reason, "TimeLimitExceeded" if child.timed_out else None,
                          clean=code == 0 and not child.timed_out)
        if self.stopping:
            return
        if child.index in self._retiring:
            self._retiring.discard(child.index)
            self.consumers.pop(child.index, None)
            logger.info("actor %d stopped: the pool shrank", child.index)
            return
        self._retiring.discard(child.index)
        if code != 0:
            logger.error("actor %d (pid %s) died: %s; replacing it", child.index,
                         child.process.pid, reason)
        lived = time.monotonic() - child.started_at
        quick = self._quick_deaths.get(child.index, 0) + 1 if lived < 1.0 and code != 0 else 0
        self._quick_deaths[child.index] = quick
        # A child that cannot even start (an import error) is not restarted in a tight loop.
        delay = 0.0 if quick == 0 else min(0.1 * 2 ** quick, 5.0)
        self._generation[child.index] = child.generation
        self._restart_at[child.index] = time.monotonic() + delay

    def _report_lost(self, child: Child, reason: str, error: str | None = None,
                     clean: bool = False) -> None:
        header: dict[str, Any] = {"actor": child.identity, "reason": reason}
        # The last task it started (empty: none yet), and whether it still ran: what the
        # router needs to judge each task the actor held.
        header["started"] = bytes(child.current.value).decode(errors="replace")
        if clean:
            header["clean"] = True
        if error:
            header["error"] = error
        try:
            protocol.send(self.sock, Message(Cmd.LOST, header), flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            logger.warning("could not report actor %d lost: %s", child.index, exc)

    def _heartbeat(self) -> None:
        header: dict[str, Any] = {"host": self.host,
                                  "actors": [c.identity for c in self.children.values()]}
        running = []
        for child in self.children.values():
            held = bytes(child.current.value).decode(errors="replace")
            attempt = protocol.parse_attempt_label(held)
            if attempt is not None and attempt[0]:
                running.append([child.identity, *attempt])
        if running:
            # What busy actors hold: a restarted router learns it here, since an actor
            # cannot announce itself until its task ends.
            header["running"] = running
        header["pool"] = self._pool_facts()
        if hasattr(os, "getloadavg"):  # for worker-heartbeat events
            header["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        try:
            protocol.send(self.sock, Message(Cmd.HEARTBEAT, header), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _drain(self) -> None:
        for _, msg in protocol.drain(self.sock):
            if msg.cmd is Cmd.CONTROL:
                self._control(msg.header)
            elif msg.cmd is Cmd.ERROR:
                logger.error("router: %s", msg.header.get("message"))
            else:
                logger.debug("supervisor got %s", msg.cmd.value)

    def _control(self, header: dict[str, Any]) -> None:
        """One control request the router forwarded (docs/operations.md); a bad one is
        logged and ignored."""
        operation = _OPERATIONS.get(str(header.get("op")))
        if operation is None:
            logger.warning("unknown control operation %r from the router", header.get("op"))
            return
        try:
            operation(self, header)
        except (TypeError, ValueError, KeyError) as exc:
            logger.error("ignoring a bad %s request: %s", header.get("op"), exc)

    def _on_kill(self, header: dict[str, Any]) -> None:
        self._kill(header.get("actor"), str(header.get("signal", "SIGKILL")), header.get("task"))

    def _on_shutdown(self, header: dict[str, Any]) -> None:
        if not self.stopping:
            logger.info("the router asks for a warm shutdown")
            self.warm_shutdown()

    # -- the pool's size ------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Actors running and to be restarted, less those told to stop for good."""
        return len((set(self.children) | set(self._restart_at)) - self._retiring)

    def grow(self, n: int) -> None:
        if self.stopping:
            return
        for _ in range(n):
            self._spawn(self._next_index, 0)
            self._next_index += 1
        logger.info("pool grew by %d to %d actors", n, self.size)

    def shrink(self, n: int) -> None:
        """Stop ``n`` actors warm, idle ones first: a busy one finishes its task first and
        hands back what it prefetched; none is killed."""
        for index in [i for i in self._restart_at if i not in self._retiring][:n]:
            del self._restart_at[index]  # not started again: it counts as stopped
            n -= 1
        live = [c for c in self.children.values() if c.index not in self._retiring]
        for child in sorted(live, key=lambda c: (c.busy, -c.index))[:max(n, 0)]:
            self._retiring.add(child.index)
            child.send_signal(signal.SIGTERM)
        logger.info("pool shrinking to %d actors", self.size)

    def _on_grow(self, header: dict[str, Any]) -> None:
        self.grow(_count(header, "n"))

    def _on_shrink(self, header: dict[str, Any]) -> None:
        self.shrink(_count(header, "n"))

    def _on_autoscale(self, header: dict[str, Any]) -> None:
        most, least = _count(header, "max"), _count(header, "min")
        if least > most:
            raise ValueError(f"min {least} > max {most}")
        self.autoscale = (most, least)
        self.conf["autoscale"] = [most, least]
        if self.size > most:
            self.shrink(self.size - most)
        elif self.size < least:
            self.grow(least - self.size)

    def _autoscale(self) -> None:
        """Within the autoscale bounds: one more actor when every one is busy, one fewer
        after 10 heartbeats in a row with an idle one to spare."""
        if self.autoscale is None or self.stopping:
            return
        most, least = self.autoscale
        live = [c for c in self.children.values() if c.index not in self._retiring]
        idle = sum(1 for c in live if not c.busy)
        if live and idle == 0 and self.size < most:
            self.grow(1)
        self._quiet_beats = self._quiet_beats + 1 if idle > 1 and self.size > least else 0
        if self._quiet_beats >= 10:
            self._quiet_beats = 0
            self.shrink(1)

    # -- what actors run with ---------------------------------------------------------------

    def _on_time_limit(self, header: dict[str, Any]) -> None:
        """Kept for the actors started from now on (the router tells the live ones)."""
        name, soft, hard = header["task"], header.get("soft"), header.get("hard")
        if not isinstance(name, str) or not all(
                v is None or isinstance(v, (int, float)) for v in (soft, hard)):
            raise ValueError("time_limit needs a task name and numbers or nulls")
        if soft is None and hard is None:
            self.time_limits.pop(name, None)
        else:
            self.time_limits[name] = (soft, hard)
        self.conf["time_limits"] = {k: list(v) for k, v in self.time_limits.items()}

    def _on_consumer(self, header: dict[str, Any]) -> None:
        """Kept for the actor that replaces one of those named (the router tells them)."""
        queue, names = header["queue"], header.get("actors")
        if not isinstance(queue, str) or not isinstance(names, list):
            raise ValueError("a consumer change needs a queue and a list of actors")
        adding = header.get("op") == "add_consumer"
        for child in self.children.values():
            if child.identity.decode() in names:
                queues = [q for q in self.consumers.get(child.index, self.default_queues)
                          if q != queue]
                self.consumers[child.index] = tuple(queues + ([queue] if adding else []))

    # -- what inspect shows ------------------------------------------------------------------

    def _pool_facts(self) -> dict[str, Any]:
        actors: dict[str, Any] = {}
        for child in self.children.values():
            child.reported = read_facts(child.facts) or child.reported
            if child.measured is None and child.process.pid is not None:
                try:
                    child.measured = psutil.Process(child.process.pid)
                except psutil.Error:
                    pass
            actors[child.identity.decode(errors="replace")] = {
                **child.reported, "pid": child.process.pid or 0,
                "rusage": rusage(child.measured) if child.measured is not None else {}}
        return {"pid": os.getpid(), "started": self.started, "size": self.size,
                "prefetch": self.config.prefetch,
                "autoscale": list(self.autoscale) if self.autoscale else None,
                "conf": self.conf, "actors": actors}

    def _kill(self, identity: Any, signal_name: str, task: Any = None) -> None:
        """Terminate the actor running a revoked task. SIGTERM and SIGINT mean a warm stop
        to an actor, which would let the task finish, so those become SIGKILL. An actor
        already running another task than ``task`` ("uid\nretries") is left alone: the
        revoked one ended meanwhile."""
        try:
            signum = signal.Signals[signal_name if signal_name.startswith("SIG")
                                    else f"SIG{signal_name}"]
        except KeyError:
            logger.error("terminate: unknown signal %r", signal_name)
            return
        if signum in (signal.SIGTERM, signal.SIGINT):
            signum = signal.SIGKILL
        for child in self.children.values():
            if child.identity == identity and child.process.is_alive():
                running = bytes(child.current.value).decode(errors="replace")
                if isinstance(task, str) and running and running != task:
                    logger.info("not terminating actor %d: the revoked task ended; it runs "
                                "another now", child.index)
                    continue
                logger.info("terminating actor %d (pid %s) with %s for a revoked task",
                            child.index, child.process.pid, signum.name)
                child.send_signal(signum)

    # -- shutdown -----------------------------------------------------------------------

    def warm_shutdown(self) -> None:
        if self.stopping:
            self.cold_shutdown()
            return
        logger.info("warm shutdown: waiting up to %gs for running tasks",
                    self.config.shutdown_timeout_s)
        self.stopping = True
        self._restart_at.clear()
        self._shutdown_deadline = time.monotonic() + self.config.shutdown_timeout_s
        for child in self.children.values():
            if child.process.is_alive():
                child.send_signal(signal.SIGTERM)

    def cold_shutdown(self) -> None:
        logger.warning("cold shutdown: killing actors now")
        self.stopping = True
        self.cold = True
        self._restart_at.clear()
        self._kill_all()

    def _kill_all(self) -> None:
        for child in self.children.values():
            if child.process.is_alive():
                child.process.kill()


def _count(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000:
        raise ValueError(f"'{key}' must be an integer from 0 to 10000")
    return value


_OPERATIONS: dict[str, Callable[[Supervisor, dict[str, Any]], None]] = {
    "kill": Supervisor._on_kill, "shutdown": Supervisor._on_shutdown,
    "pool_grow": Supervisor._on_grow, "pool_shrink": Supervisor._on_shrink,
    "autoscale": Supervisor._on_autoscale, "time_limit": Supervisor._on_time_limit,
    "add_consumer": Supervisor._on_consumer, "cancel_consumer": Supervisor._on_consumer,
}


def main(config: WorkerConfig) -> int:
    set_title(f"zq workers {config.app} (supervisor of {config.concurrency}) "
              f"{config.router}")
    supervisor = Supervisor(config, Wakeup())
    signal.signal(signal.SIGTERM, lambda s, f: supervisor.warm_shutdown())
    signal.signal(signal.SIGINT, lambda s, f: supervisor.warm_shutdown())
    signal.signal(signal.SIGQUIT, lambda s, f: supervisor.cold_shutdown())
    return supervisor.run()


def _banner(host: str, concurrency: int, router: str, queues: Any, tasks: list[str]) -> None:
    """What a worker runs, on stderr at start whatever the log level, as Celery's banner."""
    lines = [f"zq workers {host}", f"  router:      {router}",
             f"  concurrency: {concurrency} actor processes",
             f"  queues:      {', '.join(queues)}", "", "[tasks]"]
    lines += [f"  . {name}" for name in tasks]
    print("\n".join(lines) + "\n", file=sys.stderr, flush=True)
