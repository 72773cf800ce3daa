"""Celery with Redis as broker and result backend: its worker and a client of the same
``add`` (``celery_tasks.py``), used by ``celery_compare.py`` and ``peers.py``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import BenchError, add_round_trips_s, rate_per_s
from _services import BENCH_DIR, REDIS_URL_VARIABLE, Service, bench_env, wait_until

CONCURRENCY = 2
WHAT = f"celery worker -P prefork -c {CONCURRENCY}, Redis broker and result backend"


def start_celery_worker(directory: Path, redis_url: str) -> Service:
    return Service("celery worker", [
        sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "-P", "prefork",
        "-c", str(CONCURRENCY), "--loglevel", "WARNING", "--without-gossip",
        "--without-mingle", "--without-heartbeat", "-n", f"zq-bench-{os.getpid()}@localhost"],
        directory / "celery.log", env=bench_env(redis_url), cwd=BENCH_DIR)


class CeleryClient:
    """``celery_tasks.add`` from this process, every value checked."""

    def __init__(self, redis_url: str, timeout_s: float):
        os.environ[REDIS_URL_VARIABLE] = redis_url
        import celery_tasks

        self.add = celery_tasks.add
        self.app = celery_tasks.app
        self.timeout_s = timeout_s

    def wait_for_worker(self, worker: Service) -> None:
        from celery.exceptions import TimeoutError as CeleryTimeout

        result = self.add.delay(0, 0)

        def answered() -> bool:
            try:
                return bool(result.get(timeout=0.5) == 0)
            except CeleryTimeout:
                return False

        wait_until(answered, worker, "the Celery worker to run a first task")

    def close(self) -> None:
        self.app.close()

    def call_add(self, x: int, y: int) -> Any:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            return self.add.delay(x, y).get(timeout=self.timeout_s)
        except CeleryTimeout:
            raise BenchError(f"celery: add.delay({x}, {y}) not done within "
                             f"{self.timeout_s:g}s") from None

    def latency_samples_s(self, count: int, warmup: int) -> list[float]:
        return add_round_trips_s(self.call_add, count, warmup, "celery")

    def delay_throughput(self, count: int) -> dict[str, Any]:
        """The same loop as zq's: ``add.delay(i, i)`` for every i, then every result."""
        from celery.exceptions import TimeoutError as CeleryTimeout

        started = time.perf_counter()
        results = [self.add.delay(i, i) for i in range(count)]
        sent_s = time.perf_counter() - started
        deadline = time.monotonic() + self.timeout_s
        values = []
        for index, result in enumerate(results):
            try:
                values.append(result.get(timeout=max(deadline - time.monotonic(), 0.001)))
            except CeleryTimeout:
                raise BenchError(f"celery: only {index} of {count} results within "
                                 f"{self.timeout_s:g}s") from None
        total_s = time.perf_counter() - started
        if values != [2 * i for i in range(count)]:
            raise BenchError(f"celery: wrong results for {count} add.delay(i, i)")
        return {"tasks": count, "send_duration_s": round(sent_s, 4),
                "total_duration_s": round(total_s, 4),
                "send_tasks_per_s": rate_per_s(count, sent_s),
                "end_to_end_tasks_per_s": rate_per_s(count, total_s)}
