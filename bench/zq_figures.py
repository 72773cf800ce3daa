"""zq's side: real ``zq router`` and ``zq workers -n 2`` processes, driven through the public API.

The client is this process, calling ``examples.tasks.add`` exactly as a user would. Every
value that comes back is checked, so a broken run fails instead of reporting a fast number.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import zq
from zq.testing import Cluster

from _common import BenchError, add_round_trips_s, free_tcp_port, rate_per_s

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_MODULE = "examples.tasks"
WORKER_COUNT = 2


class TcpCluster(Cluster):
    """A Cluster whose router listens on tcp://127.0.0.1 (a free port) instead of ipc://."""

    def __init__(self, directory: Path, **kwargs: Any):
        super().__init__(directory, **kwargs)
        self.router = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.env["ZQ_ROUTER"] = self.router


def make_cluster(directory: Path, transport: str, results: str = "sqlite") -> Cluster:
    """A router (results kept in ``results``) and ``zq workers -n 2`` for the example app,
    on ``ipc`` or ``tcp``."""
    cls = TcpCluster if transport == "tcp" else Cluster
    return cls(directory, app=APP_MODULE, concurrency=WORKER_COUNT,
               router_args=["--results", results], workers_args=["-l", "WARNING"],
               env={"PYTHONPATH": str(REPO_ROOT)},
               cwd=REPO_ROOT)


def _check(value: Any, expected: Any, what: str) -> None:
    if value != expected:
        raise BenchError(f"zq: {what} returned {value!r}, expected {expected!r}")


class Client:
    """The example app's ``add``, pointed at one cluster or another between measurements."""

    def __init__(self, timeout_s: float):
        from examples.tasks import add, app

        self.add: zq.Task = add
        self.app: zq.App = app
        self.timeout_s = timeout_s
        self.router: str | None = None

    def use(self, router: str) -> None:
        """Send to ``router`` from now on; one untimed task proves the path works."""
        if router == self.router:
            return
        self.app.close()
        self.app.conf.update(router=router)
        self.router = router
        _check(self.call_add(0, 0), 0, "the warm-up add.delay(0, 0)")

    def close(self) -> None:
        self.app.close()

    def call_add(self, x: int, y: int) -> Any:
        try:
            return self.add.delay(x, y).get(timeout=self.timeout_s)
        except zq.TimeoutError:
            raise BenchError(f"zq: add.delay({x}, {y}) not done within {self.timeout_s:g}s") \
                from None

    def latency_samples_s(self, count: int, warmup: int) -> list[float]:
        """``add.delay(1, 2).get()`` one after another: send, run, store, push back."""
        return add_round_trips_s(self.call_add, count, warmup, "zq")

    def delay_throughput(self, count: int) -> dict[str, Any]:
        """``add.delay(i, i)`` for every i (each returns once the router accepted it), then
        every result collected: the send rate and the end-to-end rate."""
        started = time.perf_counter()
        results = [self.add.delay(i, i) for i in range(count)]
        sent_s = time.perf_counter() - started
        values = self._collect(results)
        total_s = time.perf_counter() - started
        _check(values, [2 * i for i in range(count)], f"{count} add.delay(i, i)")
        return {"tasks": count, "send_duration_s": round(sent_s, 4),
                "total_duration_s": round(total_s, 4),
                "send_tasks_per_s": rate_per_s(count, sent_s),
                "end_to_end_tasks_per_s": rate_per_s(count, total_s)}

    def group_throughput(self, count: int) -> dict[str, Any]:
        """``group(add.s(i, i) ...).apply_async()`` (sent in batches), then ``.get()``."""
        started = time.perf_counter()
        group_result = zq.group(self.add.s(i, i) for i in range(count)).apply_async()
        try:
            values = group_result.get(timeout=self.timeout_s)
        except zq.TimeoutError:
            raise BenchError(f"zq: the group of {count} was not done within "
                             f"{self.timeout_s:g}s") from None
        duration_s = time.perf_counter() - started
        _check(values, [2 * i for i in range(count)], f"a group of {count} add.s(i, i)")
        return {"tasks": count, "duration_s": round(duration_s, 4),
                "tasks_per_s": rate_per_s(count, duration_s)}

    def _collect(self, results: list[zq.AsyncResult]) -> list[Any]:
        """Every result's value, the whole wait bounded by the client's timeout."""
        deadline = time.monotonic() + self.timeout_s
        values = []
        for index, result in enumerate(results):
            remaining_s = max(deadline - time.monotonic(), 0.001)
            try:
                values.append(result.get(timeout=remaining_s))
            except zq.TimeoutError:
                raise BenchError(f"zq: only {index} of {len(results)} results within "
                                 f"{self.timeout_s:g}s") from None
        return values
