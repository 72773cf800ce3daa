"""The systems ``peers.py`` measures, each behind the same small interface.

Every system is started by :meth:`System.start` into an ``ExitStack`` of its own (so that it
can be stopped alone, and is stopped whatever happens), proves one task end to end before
it is measured, and then takes the same load: ``delay_throughput(n)`` (n no-op
``add(i, i)`` enqueued back to back with the system's own enqueue call, then every result
collected and checked) and ``latency_samples_s(count, warmup)`` (sequential
enqueue-then-wait round trips, each checked). The task modules the peers' workers import
are ``celery_tasks.py``, ``huey_tasks.py``, ``dramatiq_tasks.py`` and ``rq_tasks.py``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import baseline
import zq_figures
from _common import BenchError, add_round_trips_s, rate_per_s
from _services import (
    BENCH_DIR,
    REDIS_URL_VARIABLE,
    Service,
    bench_env,
    redis_version,
    start_redis,
    wait_until,
)

INSTALL_PACKAGES = "pip install -r bench/requirements.txt"
INSTALL_REDIS = "apt-get install -y redis-server"
WORKERS = 2

Handle = TypeVar("Handle")


def delay_loop(who: str, count: int, timeout_s: float, send: Callable[[int], Handle],
               collect: Callable[[Handle, float], Any]) -> dict[str, Any]:
    """``send(i)`` for every i < count back to back, then ``collect(handle, timeout_s)`` for
    each in order: each result may take up to ``timeout_s`` after the one before, so a slow
    peer (RQ forks a process per job) is measured as long as it makes progress. Every value
    is checked."""
    started = time.perf_counter()
    handles = [send(i) for i in range(count)]
    sent_s = time.perf_counter() - started
    values = []
    for index, handle in enumerate(handles):
        try:
            values.append(collect(handle, timeout_s))
        except BenchError as exc:
            raise BenchError(f"{exc} (after {index} of {count} results)") from None
    total_s = time.perf_counter() - started
    wrong = next((i for i, value in enumerate(values) if value != 2 * i), None)
    if wrong is not None:
        raise BenchError(f"{who}: add({wrong}, {wrong}) returned {values[wrong]!r}")
    return {"tasks": count, "send_duration_s": round(sent_s, 4),
            "total_duration_s": round(total_s, 4),
            "send_tasks_per_s": rate_per_s(count, sent_s),
            "end_to_end_tasks_per_s": rate_per_s(count, total_s)}


class System:
    """One system under test. Subclasses fill in the class attributes and the four methods."""

    name = ""
    what = ""
    packages: tuple[str, ...] = ()
    needs_redis = False

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.log_tails: dict[str, Callable[[], str]] = {}

    def missing(self) -> str | None:
        """Why this system cannot run here, or None."""
        for package in self.packages:
            if importlib.util.find_spec(package) is None:
                return f"Python package '{package}' is not installed ({INSTALL_PACKAGES})"
        if self.needs_redis and shutil.which("redis-server") is None:
            return f"redis-server is not on PATH ({INSTALL_REDIS})"
        return None

    def versions(self) -> dict[str, str]:
        found = {package: importlib.metadata.version(package) for package in self.packages}
        if self.needs_redis:
            found["redis-server"] = redis_version()
        return found

    def start(self, stack: ExitStack, directory: Path) -> None:
        """Start every process (each stop registered on ``stack``) and run one first task."""
        raise NotImplementedError

    def delay_throughput(self, count: int) -> dict[str, Any]:
        raise NotImplementedError

    def call_add(self, x: int, y: int) -> Any:
        """One round trip: enqueue ``add(x, y)`` and wait for its value."""
        raise NotImplementedError

    def latency_samples_s(self, count: int, warmup: int) -> list[float]:
        return add_round_trips_s(self.call_add, count, warmup, self.name)

    def _redis(self, stack: ExitStack, directory: Path) -> str:
        """A private redis-server for this system alone; its URL."""
        server, url = start_redis(directory, f"redis-server-{self.name}")
        stack.callback(server.stop)
        self.log_tails["redis-server"] = server.log_tail
        # The task module this system imports next reads it.
        os.environ[REDIS_URL_VARIABLE] = url
        return url

    def _service(self, stack: ExitStack, directory: Path, args: list[str],
                 redis_url: str) -> Service:
        service = Service(f"{self.name} workers", args, directory / f"{self.name}.log",
                          env=bench_env(redis_url), cwd=BENCH_DIR)
        stack.callback(service.stop)
        self.log_tails[f"{self.name} workers"] = service.log_tail
        return service


class Skeleton(System):
    """bench/baseline.py's skeleton: the floor under any ZeroMQ task queue in Python."""

    name = "skeleton"

    def __init__(self, timeout_s: float, window: int):
        super().__init__(timeout_s)
        self.window = window
        self.what = (f"bare pyzmq: DEALER client -> ROUTER router process -> {WORKERS} DEALER "
                     f"echo workers (credit 1), tcp; at most {window:,} messages in flight")

    def versions(self) -> dict[str, str]:
        import zmq

        return {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}

    def start(self, stack: ExitStack, directory: Path) -> None:
        skeleton = stack.enter_context(baseline.Skeleton())
        self.client = stack.enter_context(baseline.Client(skeleton.frontend))

    def delay_throughput(self, count: int) -> dict[str, Any]:
        figures = self.client.throughput(count, self.timeout_s, self.window)
        return {"tasks": count, "window": self.window,
                "total_duration_s": figures["duration_s"], "send_tasks_per_s": None,
                "end_to_end_tasks_per_s": figures["msgs_per_s"]}

    def latency_samples_s(self, count: int, warmup: int) -> list[float]:
        return self.client.latency_samples_s(count, warmup, self.timeout_s)


class Zq(System):
    name = "zq"

    def __init__(self, timeout_s: float, results: str):
        super().__init__(timeout_s)
        self.results = results
        self.what = (f"zq router (tcp) + zq workers -n {zq_figures.WORKER_COUNT}, "
                     f"--results {results}")

    def versions(self) -> dict[str, str]:
        import zmq

        return {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}

    def start(self, stack: ExitStack, directory: Path) -> None:
        cluster = stack.enter_context(zq_figures.make_cluster(directory / "zq", "tcp",
                                                              self.results))
        self.log_tails["zq"] = lambda: cluster.logs()[-3000:]
        self.client = zq_figures.Client(self.timeout_s)
        stack.callback(self.client.close)
        self.client.use(cluster.router)

    def delay_throughput(self, count: int) -> dict[str, Any]:
        return self.client.delay_throughput(count)

    def latency_samples_s(self, count: int, warmup: int) -> list[float]:
        return self.client.latency_samples_s(count, warmup)


class Celery(System):
    name = "celery"
    packages = ("celery", "redis")
    needs_redis = True

    def __init__(self, timeout_s: float):
        from celery_side import WHAT

        super().__init__(timeout_s)
        self.what = WHAT

    def start(self, stack: ExitStack, directory: Path) -> None:
        from celery_side import CeleryClient, start_celery_worker

        redis_url = self._redis(stack, directory)
        worker = start_celery_worker(directory, redis_url)
        stack.callback(worker.stop)
        self.log_tails["celery worker"] = worker.log_tail
        self.client = CeleryClient(redis_url, self.timeout_s)
        stack.callback(self.client.close)
        self.client.wait_for_worker(worker)

    def delay_throughput(self, count: int) -> dict[str, Any]:
        return self.client.delay_throughput(count)

    def latency_samples_s(self, count: int, warmup: int) -> list[float]:
        return self.client.latency_samples_s(count, warmup)


class Huey(System):
    name = "huey"
    what = (f"huey_consumer -k process -w {WORKERS}, RedisHuey (queue and result store), "
            f"notify_result=True")
    packages = ("huey", "redis")
    needs_redis = True

    def missing(self) -> str | None:
        reason = super().missing()
        if reason is None and int(importlib.metadata.version("huey").split(".")[0]) < 3:
            reason = f"huey 3 or later is needed for notify_result ({INSTALL_PACKAGES})"
        return reason

    def start(self, stack: ExitStack, directory: Path) -> None:
        redis_url = self._redis(stack, directory)
        import huey_tasks

        self.add = huey_tasks.add
        consumer = self._service(stack, directory, [
            sys.executable, "-m", "huey.bin.huey_consumer", "huey_tasks.huey", "-k", "process",
            "-w", str(WORKERS), "--quiet"], redis_url)
        first = self.add(0, 0)
        wait_until(lambda: self._ready(first), consumer, "the Huey consumer to run a task")

    @staticmethod
    def _ready(result: Any) -> bool:
        from huey.exceptions import ResultTimeout

        try:
            return bool(result.get(blocking=True, timeout=0.5) == 0)
        except ResultTimeout:
            return False

    def _collect(self, result: Any, timeout_s: float) -> Any:
        from huey.exceptions import ResultTimeout

        try:
            return result.get(blocking=True, timeout=timeout_s)
        except ResultTimeout:
            raise BenchError(f"huey: task {result.id} not done within {timeout_s:g}s") from None

    def delay_throughput(self, count: int) -> dict[str, Any]:
        return delay_loop("huey", count, self.timeout_s, lambda i: self.add(i, i),
                          self._collect)

    def call_add(self, x: int, y: int) -> Any:
        return self._collect(self.add(x, y), self.timeout_s)


class Dramatiq(System):
    name = "dramatiq"
    what = (f"dramatiq -p {WORKERS} -t 8, RedisBroker + Results middleware on a Redis "
            f"backend")
    packages = ("dramatiq", "redis")
    needs_redis = True

    def start(self, stack: ExitStack, directory: Path) -> None:
        redis_url = self._redis(stack, directory)
        import dramatiq_tasks

        self.add = dramatiq_tasks.add
        self.backend = dramatiq_tasks.backend
        workers = self._service(stack, directory, [
            sys.executable, "-m", "dramatiq", "dramatiq_tasks", "-p", str(WORKERS),
            "-t", "8"], redis_url)
        first = self.add.send(0, 0)
        wait_until(lambda: self._ready(first), workers, "the Dramatiq workers to run a task")

    def _ready(self, message: Any) -> bool:
        from dramatiq.results import ResultTimeout

        try:
            # The Redis backend blocks in whole seconds: 1 s is its shortest wait.
            return bool(message.get_result(backend=self.backend, block=True,
                                           timeout=1000) == 0)
        except ResultTimeout:
            return False

    def _collect(self, message: Any, timeout_s: float) -> Any:
        from dramatiq.results import ResultTimeout

        try:
            return message.get_result(backend=self.backend, block=True,
                                      timeout=max(1000, int(timeout_s * 1000)))
        except ResultTimeout:
            raise BenchError(f"dramatiq: message {message.message_id} not done within "
                             f"{timeout_s:g}s") from None

    def delay_throughput(self, count: int) -> dict[str, Any]:
        return delay_loop("dramatiq", count, self.timeout_s, lambda i: self.add.send(i, i),
                          self._collect)

    def call_add(self, x: int, y: int) -> Any:
        return self._collect(self.add.send(x, y), self.timeout_s)


class Rq(System):
    name = "rq"
    what = (f"rq worker-pool -n {WORKERS} (RQ's default Worker: a forked work horse per job), "
            f"Redis queue and results")
    packages = ("rq", "redis")
    needs_redis = True

    def start(self, stack: ExitStack, directory: Path) -> None:
        redis_url = self._redis(stack, directory)
        import rq_tasks

        self.add = rq_tasks.add
        pool = self._service(stack, directory, [
            sys.executable, "-m", "rq.cli", "worker-pool", "-n", str(WORKERS), "-u", redis_url,
            "--logging-level", "WARNING", "default"], redis_url)
        first = self.add.delay(0, 0)
        wait_until(lambda: first.latest_result(timeout=1) is not None, pool,
                   "the RQ workers to run a task")

    def _collect(self, job: Any, timeout_s: float) -> Any:
        from rq.results import Result

        # RQ blocks in whole seconds (XREAD on the job's result stream).
        result = job.latest_result(timeout=max(1, math.ceil(timeout_s)))
        if result is None:
            raise BenchError(f"rq: job {job.id} not done within {timeout_s:g}s")
        if result.type != Result.Type.SUCCESSFUL:
            raise BenchError(f"rq: job {job.id} ended {result.type}: {result.exc_string}")
        return result.return_value

    def delay_throughput(self, count: int) -> dict[str, Any]:
        return delay_loop("rq", count, self.timeout_s, lambda i: self.add.delay(i, i),
                          self._collect)

    def call_add(self, x: int, y: int) -> Any:
        return self._collect(self.add.delay(x, y), self.timeout_s)
