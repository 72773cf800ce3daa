"""The baseline: a bare pyzmq load-balancing broker and two echo workers, with no features.

    client DEALER -> broker ROUTER | ROUTER <- worker DEALER x 2

Every piece is its own OS process (spawn), on tcp://127.0.0.1 with OS-chosen ports. Each
worker holds credit 1: it announces itself once, then every reply it sends is also its
request for the next message, so the broker never hands it more than one at a time. It is
the floor under any ZeroMQ task queue in Python on this machine: what zq costs on top of it
is what its features cost.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import zmq

from _common import BenchError, rate_per_s

WORKER_COUNT = 2
READY = b"\x01"
# Children end on their own after this, or as soon as their parent is gone, so that one
# orphaned by a killed benchmark cannot linger.
CHILD_LIFETIME_S = 3600.0
POLL_INTERVAL_MS = 100


def _socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    """A socket that never drops or blocks on a full queue: a benchmark run is bounded."""
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.sndhwm = 0
    sock.rcvhwm = 0
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


def _drain(sock: zmq.Socket[Any]) -> Iterator[list[bytes]]:
    """Every message already queued on ``sock``, without waiting."""
    while True:
        try:
            yield sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


class _Broker:
    """Hands each client message to an idle worker, or queues it until one is idle."""

    def __init__(self, frontend: zmq.Socket[Any], backend: zmq.Socket[Any]):
        self.frontend = frontend
        self.backend = backend
        self.idle_workers: deque[bytes] = deque()
        self.waiting: deque[list[bytes]] = deque()
        self.workers_seen: set[bytes] = set()

    def on_worker_message(self, frames: list[bytes]) -> None:
        worker_id, *rest = frames
        self.workers_seen.add(worker_id)
        if rest != [READY]:
            self._reply(rest)
        if self.waiting:
            self.backend.send_multipart([worker_id, *self.waiting.popleft()])
        else:
            self.idle_workers.append(worker_id)

    def _reply(self, frames: list[bytes]) -> None:
        try:
            self.frontend.send_multipart(frames)
        except zmq.ZMQError as exc:
            # The client has gone (it was interrupted): its late echoes have nowhere to go.
            if exc.errno != zmq.EHOSTUNREACH:
                raise

    def on_client_message(self, frames: list[bytes]) -> None:
        if self.idle_workers:
            self.backend.send_multipart([self.idle_workers.popleft(), *frames])
        else:
            self.waiting.append(frames)


class _Lifetime:
    """How long a child runs: CHILD_LIFETIME_S at most, and never past its parent."""

    def __init__(self, parent_pid: int):
        self.parent_pid = parent_pid
        self.deadline = time.monotonic() + CHILD_LIFETIME_S

    def over(self) -> bool:
        return time.monotonic() >= self.deadline or os.getppid() != self.parent_pid


def _broker_main(conn: Connection, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = zmq.Context()
    frontend = _socket(ctx, zmq.ROUTER)
    backend = _socket(ctx, zmq.ROUTER)
    conn.send((frontend.bind_to_random_port("tcp://127.0.0.1"),
               backend.bind_to_random_port("tcp://127.0.0.1")))
    broker = _Broker(frontend, backend)
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    announced = False
    lifetime = _Lifetime(parent_pid)
    while not lifetime.over():
        events = dict(poller.poll(POLL_INTERVAL_MS))
        if backend in events:
            for frames in _drain(backend):
                broker.on_worker_message(frames)
        if frontend in events:
            for frames in _drain(frontend):
                broker.on_client_message(frames)
        if not announced and len(broker.workers_seen) >= WORKER_COUNT:
            conn.send("workers ready")
            announced = True
    ctx.destroy(linger=0)


def _worker_main(backend_port: int, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.DEALER)
    sock.connect(f"tcp://127.0.0.1:{backend_port}")
    sock.send(READY)
    lifetime = _Lifetime(parent_pid)
    while not lifetime.over():
        if sock.poll(POLL_INTERVAL_MS):
            sock.send_multipart(sock.recv_multipart())
    ctx.destroy(linger=0)


class Skeleton:
    """The broker and its workers, started on enter and stopped on exit, whatever happens."""

    def __init__(self, start_timeout_s: float = 30.0):
        self.start_timeout_s = start_timeout_s
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.frontend = ""

    def __enter__(self) -> Skeleton:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start(self) -> None:
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe(duplex=False)
        broker = mp.Process(target=_broker_main, args=(child, os.getpid()),
                            name="baseline-broker", daemon=True)
        self.processes.append(broker)
        broker.start()
        child.close()
        frontend_port, backend_port = self._expect(parent, "the broker's ports")
        self.frontend = f"tcp://127.0.0.1:{frontend_port}"
        for index in range(WORKER_COUNT):
            worker = mp.Process(target=_worker_main, args=(backend_port, os.getpid()),
                                name=f"baseline-worker-{index}", daemon=True)
            self.processes.append(worker)
            worker.start()
        self._expect(parent, "both workers to be ready")
        parent.close()

    def _expect(self, conn: Connection, what: str) -> Any:
        if not conn.poll(self.start_timeout_s):
            raise BenchError(f"baseline: timed out after {self.start_timeout_s:g}s "
                             f"waiting for {what}")
        return conn.recv()

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.is_alive():
                process.terminate()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)


class Client:
    """A client DEALER connected to the broker; closed on exit."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = _socket(self.ctx, zmq.DEALER)
        self.sock.connect(endpoint)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.ctx.destroy(linger=0)

    def round_trip_s(self, payload: bytes, timeout_s: float) -> float:
        """Send one message and wait for its echo; the elapsed time in seconds."""
        started = time.perf_counter()
        self.sock.send(payload)
        if not self.sock.poll(int(timeout_s * 1000) + 1):
            raise BenchError(f"baseline: no echo within {timeout_s:g}s")
        reply = self.sock.recv()
        elapsed_s = time.perf_counter() - started
        if reply != payload:
            raise BenchError(f"baseline: sent {payload!r}, got back {reply!r}")
        return elapsed_s

    def latency_samples_s(self, count: int, warmup: int, timeout_s: float) -> list[float]:
        """``count`` sequential round trips timed, after ``warmup`` untimed ones."""
        samples_s = [self.round_trip_s(str(i).encode(), timeout_s)
                     for i in range(warmup + count)]
        return samples_s[warmup:]

    def throughput(self, count: int, timeout_s: float,
                   window: int | None = None) -> dict[str, Any]:
        """Send ``count`` messages and collect every echo, with at most ``window`` of them in
        flight (sent, echo not yet back): a new one goes out as each echo arrives. With no
        window all ``count`` are sent back to back first."""
        if window is not None and window < 1:
            raise BenchError(f"baseline: a window of {window} messages cannot send anything")
        payloads = [str(i).encode() for i in range(count)]
        self.round_trip_s(b"warm-up", timeout_s)
        started = time.perf_counter()
        sent = count if window is None else min(window, count)
        for payload in payloads[:sent]:
            self.sock.send(payload)
        deadline = time.monotonic() + timeout_s
        replies: list[bytes] = []
        while len(replies) < count:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0 or not self.sock.poll(int(remaining_s * 1000) + 1):
                raise BenchError(f"baseline: {len(replies)} of {count} echoes "
                                 f"within {timeout_s:g}s")
            for frames in _drain(self.sock):
                replies.append(frames[0])
                if sent < count:
                    self.sock.send(payloads[sent])
                    sent += 1
        duration_s = time.perf_counter() - started
        if sorted(replies) != sorted(payloads):
            raise BenchError("baseline: the echoes do not match the messages sent")
        return {"messages": count, "window": window, "duration_s": round(duration_s, 4),
                "msgs_per_s": rate_per_s(count, duration_s)}
