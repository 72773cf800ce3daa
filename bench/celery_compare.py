"""Celery (prefork -c 2, Redis broker and result backend) against zq, side by side in one run.

    pip install celery redis && apt-get install -y redis-server    # benchmark-only tools
    python bench/celery_compare.py [--quick] [--tasks N]    # about 90 s; --quick about 20 s

Starts a private redis-server on a free port (no persistence), a Celery worker and a zq
cluster on tcp://127.0.0.1 with ``zq workers -n 2``, then measures the same ``add.delay``
loop on each and their sequential round trips in alternating blocks. Without celery, redis
or redis-server it prints a JSON document saying what is missing and exits 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import zq  # noqa: E402

import zq_figures  # noqa: E402
from _common import (  # noqa: E402
    BenchError,
    LatencyTarget,
    add_round_trips_s,
    free_tcp_port,
    interleaved_latency,
    log,
    machine_info,
    parse_args,
    rate_per_s,
    ratio,
    run_report,
    settings,
    zq_revision,
)

INSTALL = "pip install celery redis && apt-get install -y redis-server"
METHOD = ("A Redis server, a Celery worker and a zq cluster (tcp) run at once. Throughput: "
          "zq's add.delay loop then Celery's, each followed by collecting every result. "
          "Latency: alternating blocks of latency_block round trips (Celery, zq).")
START_TIMEOUT_S = 60.0


def missing_tools() -> list[str]:
    missing = [name for name in ("celery", "redis") if importlib.util.find_spec(name) is None]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


class Service:
    """A command in its own session, logged to a file, stopped with its whole group."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None):
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(list(args), stdout=self._log, stderr=subprocess.STDOUT,
                                      env=env, cwd=cwd, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL to the whole group."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.popen.pid}) did not exit after SIGKILL")
        self._log.close()


def _wait_until(ready: Any, service: Service, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not service.alive():
            raise BenchError(f"{service.name} exited with {service.popen.returncode} while "
                             f"waiting for {what}:\n{service.log_tail()}")
        if ready():
            return
        time.sleep(0.1)
    raise BenchError(f"timed out after {START_TIMEOUT_S:g}s waiting for {what}:\n"
                     f"{service.log_tail()}")


def start_redis(directory: Path) -> tuple[Service, str]:
    import redis

    port = free_tcp_port()
    server = Service("redis-server", [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(directory)], directory / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    try:
        _wait_until(answers, server, "redis-server to answer PING")
    except BaseException:
        server.stop()
        raise
    return server, url


def start_celery_worker(directory: Path, redis_url: str) -> Service:
    env = {**os.environ, "ZQ_BENCH_REDIS_URL": redis_url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR),
                                                       os.environ.get("PYTHONPATH")]))}
    return Service("celery worker", [
        sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "-P", "prefork",
        "-c", "2", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-n", f"zq-bench-{os.getpid()}@localhost"],
        directory / "celery.log", env=env, cwd=BENCH_DIR)


class CeleryClient:
    """``celery_tasks.add`` from this process, every value checked."""

    def __init__(self, redis_url: str, timeout_s: float):
        os.environ["ZQ_BENCH_REDIS_URL"] = redis_url
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

        _wait_until(answered, worker, "the Celery worker to run a first task")

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


def _with_logs(exc: BaseException, log_tails: dict[str, Callable[[], str]]) -> BenchError:
    """The error with the tail of each process's log, whose directory is about to go."""
    parts = [f"--- {name} logs (tail) ---\n{tail()}" for name, tail in log_tails.items()]
    return BenchError(f"{type(exc).__name__}: {exc}\n" + "\n".join(parts))


def measure(args: Any) -> dict[str, Any]:
    """Start everything, take the figures, stop everything (on error and Ctrl-C too)."""
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zq-celery-")))
        log("starting redis-server, a Celery worker and a zq cluster (tcp)")
        redis_server, redis_url = start_redis(directory)
        stack.callback(redis_server.stop)
        worker = start_celery_worker(directory, redis_url)
        stack.callback(worker.stop)
        cluster = stack.enter_context(zq_figures.make_cluster(directory / "zq", "tcp",
                                                                args.results))
        log_tails = {"celery worker": worker.log_tail, "redis-server": redis_server.log_tail,
                     "zq": lambda: cluster.logs()[-3000:]}
        celery_client = CeleryClient(redis_url, args.timeout_s)
        stack.callback(celery_client.close)
        zq_client = zq_figures.Client(args.timeout_s)
        stack.callback(zq_client.close)
        try:
            zq_client.use(cluster.router)
            celery_client.wait_for_worker(worker)
            figures = _take_figures(args, celery_client, zq_client)
        except (BenchError, zq.ZqError) as exc:
            raise _with_logs(exc, log_tails) from None
        log("stopping every process")
    return figures


def _take_figures(args: Any, celery_client: CeleryClient,
                  zq_client: zq_figures.Client) -> dict[str, Any]:
    log(f"throughput: zq, {args.tasks} add.delay(i, i) then every result")
    zq_delay = zq_client.delay_throughput(args.tasks)
    log(f"throughput: celery, {args.tasks} add.delay(i, i) then every result")
    celery_delay = celery_client.delay_throughput(args.tasks)
    targets: dict[str, LatencyTarget] = {
        "celery": celery_client.latency_samples_s, "zq": zq_client.latency_samples_s}
    latency = interleaved_latency(targets, args.latency_samples, args.latency_block,
                                  args.warmup)
    return {"zq_delay": zq_delay, "celery_delay": celery_delay, "latency": latency}


def _redis_version() -> str:
    output = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                            timeout=10, check=False).stdout
    return output.split(" v=")[1].split()[0] if " v=" in output else output.strip()


def report(args: Any) -> dict[str, Any]:
    import celery

    started = time.perf_counter()
    machine = machine_info()
    revision = zq_revision(BENCH_DIR.parent)
    figures = measure(args)
    zq_delay, celery_delay = figures["zq_delay"], figures["celery_delay"]
    zq_latency, celery_latency = figures["latency"]["zq"], figures["latency"]["celery"]
    return {
        "machine": machine,
        "zq_revision": revision,
        "settings": settings(args),
        "method": METHOD,
        "celery": {
            "what": "celery worker -P prefork -c 2, Redis broker and result backend",
            "celery_version": celery.__version__, "redis_server_version": _redis_version(),
            "delay": celery_delay, "latency": celery_latency},
        "zq": {
            "what": f"zq router on tcp + zq workers -n {zq_figures.WORKER_COUNT}, "
                    f"--results {args.results}",
            "delay": zq_delay, "latency": zq_latency},
        "ratios_zq_vs_celery": {
            "delay_end_to_end_throughput": ratio(zq_delay["end_to_end_tasks_per_s"],
                                                 celery_delay["end_to_end_tasks_per_s"]),
            "delay_send_rate": ratio(zq_delay["send_tasks_per_s"],
                                     celery_delay["send_tasks_per_s"]),
            "latency_p50": ratio(zq_latency["p50_ms"], celery_latency["p50_ms"]),
            "latency_p99": ratio(zq_latency["p99_ms"], celery_latency["p99_ms"]),
        },
        "duration_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    missing = missing_tools()
    if missing:
        print(json.dumps({"skipped": True, "missing": missing, "install": INSTALL}, indent=2))
        return 0
    return run_report(report, args)


if __name__ == "__main__":
    sys.exit(main())
