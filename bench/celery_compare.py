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
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import zq  # noqa: E402

import zq_figures  # noqa: E402
from _common import (  # noqa: E402
    BenchError,
    LatencyTarget,
    interleaved_latency,
    log,
    machine_info,
    parse_args,
    ratio,
    run_report,
    settings,
    zq_revision,
)
from _services import redis_version, start_redis, with_logs  # noqa: E402
from celery_side import WHAT as CELERY_WHAT  # noqa: E402
from celery_side import CeleryClient, start_celery_worker  # noqa: E402

INSTALL = "pip install celery redis && apt-get install -y redis-server"
METHOD = ("A Redis server, a Celery worker and a zq cluster (tcp) run at once. Throughput: "
          "zq's add.delay loop then Celery's, each followed by collecting every result. "
          "Latency: alternating blocks of latency_block round trips (Celery, zq).")


def missing_tools() -> list[str]:
    missing = [name for name in ("celery", "redis") if importlib.util.find_spec(name) is None]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


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
            raise with_logs(exc, log_tails) from None
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
            "what": CELERY_WHAT,
            "celery_version": celery.__version__, "redis_server_version": redis_version(),
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
