"""Measure zq against a bare pyzmq skeleton side by side in one run; print one JSON document.

    python bench/run.py            # under a minute: 10,000 tasks, 2,000 round trips each
    python bench/run.py --quick    # about 10 s: a smoke run
    python bench/run.py --tasks 20000 --latency-samples 5000
    python bench/run.py --skeleton-window 1000    # the skeleton with 1,000 messages in flight

Loopback round trips on a shared machine swing several-fold from minute to minute, so the
skeleton and both zq clusters run at the same time and the figures are taken interleaved:
the skeleton's throughput before, between and after zq's two throughput figures, and the
round trips in alternating blocks (skeleton, zq on ipc, zq on tcp). Progress goes to
stderr; stdout carries only the JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import zq  # noqa: E402

import baseline  # noqa: E402
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

AIMS = {"throughput_tasks_per_s": 5_000, "latency_p50_ms": 1.0}
METHOD = ("Skeleton, zq on ipc and zq on tcp run at once. Throughput: skeleton, zq delay, "
          "skeleton, zq group, skeleton; each zq figure is divided by the mean of the two "
          "skeleton passes around it. Latency: alternating blocks of latency_block round "
          "trips (skeleton, zq ipc, zq tcp) until each has latency_samples.")


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 1)


def measure_throughput(skeleton: baseline.Client, client: zq_figures.Client,
                       tasks: int, timeout_s: float,
                       window: int | None = None) -> dict[str, Any]:
    """Skeleton, zq delay, skeleton, zq group, skeleton: each zq figure between two passes.
    The skeleton keeps at most ``window`` messages in flight (all of them without one)."""
    passes = []
    in_flight = "all" if window is None else f"at most {window}"
    log(f"throughput: skeleton, {tasks} messages pipelined ({in_flight} in flight)")
    passes.append(skeleton.throughput(tasks, timeout_s, window))
    log(f"throughput: zq, {tasks} add.delay(i, i) then every result")
    delay = client.delay_throughput(tasks)
    log("throughput: skeleton again")
    passes.append(skeleton.throughput(tasks, timeout_s, window))
    log(f"throughput: zq, a group of {tasks} add.s(i, i)")
    group = client.group_throughput(tasks)
    log("throughput: skeleton again")
    passes.append(skeleton.throughput(tasks, timeout_s, window))
    rates = [p["msgs_per_s"] for p in passes]
    return {"passes": passes, "delay": delay, "group": group,
            "baseline_around_delay_msgs_per_s": _mean(rates[0:2]),
            "baseline_around_group_msgs_per_s": _mean(rates[1:3])}


def latency_targets(skeleton: baseline.Client, client: zq_figures.Client,
                    routers: dict[str, str], timeout_s: float) -> dict[str, LatencyTarget]:
    def on_skeleton(count: int, warmup: int) -> list[float]:
        return skeleton.latency_samples_s(count, warmup, timeout_s)

    def on_zq(router: str) -> LatencyTarget:
        def target(count: int, warmup: int) -> list[float]:
            client.use(router)
            return client.latency_samples_s(count, warmup)
        return target

    return {"baseline": on_skeleton, "zq_ipc": on_zq(routers["ipc"]),
            "zq_tcp": on_zq(routers["tcp"])}


def compute_ratios(throughput: dict[str, Any],
                   latency: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Throughput as a fraction of the skeleton's; latency as a multiple of the skeleton's."""
    around_delay = throughput["baseline_around_delay_msgs_per_s"]
    around_group = throughput["baseline_around_group_msgs_per_s"]
    base = latency["baseline"]
    return {
        "delay_end_to_end_vs_baseline_throughput":
            ratio(throughput["delay"]["end_to_end_tasks_per_s"], around_delay),
        "delay_send_rate_vs_baseline_throughput":
            ratio(throughput["delay"]["send_tasks_per_s"], around_delay),
        "group_vs_baseline_throughput": ratio(throughput["group"]["tasks_per_s"], around_group),
        "latency_p50_ipc_vs_baseline": ratio(latency["zq_ipc"]["p50_ms"], base["p50_ms"]),
        "latency_p99_ipc_vs_baseline": ratio(latency["zq_ipc"]["p99_ms"], base["p99_ms"]),
        "latency_p50_tcp_vs_baseline": ratio(latency["zq_tcp"]["p50_ms"], base["p50_ms"]),
        "latency_p99_tcp_vs_baseline": ratio(latency["zq_tcp"]["p99_ms"], base["p99_ms"]),
    }


def _with_logs(exc: BaseException, clusters: dict[str, Any]) -> BenchError:
    """The error with the tail of each cluster's logs, whose directory is about to go."""
    logs = "\n".join(f"--- zq {name} cluster logs (tail) ---\n{cluster.logs()[-3000:]}"
                     for name, cluster in clusters.items())
    return BenchError(f"{type(exc).__name__}: {exc}\n{logs}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, take the figures, stop everything (on error and Ctrl-C too)."""
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zq-bench-")))
        log("starting the skeleton and two zq clusters (ipc, tcp)")
        skeleton = stack.enter_context(baseline.Skeleton())
        clusters = {transport: stack.enter_context(
            zq_figures.make_cluster(directory / transport, transport, args.results))
            for transport in ("ipc", "tcp")}
        skeleton_client = stack.enter_context(baseline.Client(skeleton.frontend))
        client = zq_figures.Client(args.timeout_s)
        stack.callback(client.close)
        routers = {name: cluster.router for name, cluster in clusters.items()}
        try:
            client.use(routers["ipc"])
            throughput = measure_throughput(skeleton_client, client, args.tasks, args.timeout_s,
                                            args.skeleton_window)
            targets = latency_targets(skeleton_client, client, routers, args.timeout_s)
            latency = interleaved_latency(targets, args.latency_samples,
                                          args.latency_block, args.warmup)
        except (BenchError, zq.ZqError) as exc:
            raise _with_logs(exc, clusters) from None
        log("stopping every process")
    return {"throughput": throughput, "latency": latency}


def report(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    machine = machine_info()
    revision = zq_revision(BENCH_DIR.parent)
    figures = measure(args)
    throughput, latency = figures["throughput"], figures["latency"]
    return {
        "machine": machine,
        "zq_revision": revision,
        "settings": {**settings(args), "skeleton_window": args.skeleton_window},
        "method": METHOD,
        "baseline": {
            "what": "pyzmq DEALER -> ROUTER broker -> 2 DEALER echo workers, credit 1, tcp",
            "window": args.skeleton_window,
            "throughput_passes_msgs_per_s": [p["msgs_per_s"] for p in throughput["passes"]],
            "throughput_msgs_per_s": _mean([p["msgs_per_s"] for p in throughput["passes"]]),
            "latency": latency["baseline"],
        },
        "zq": {
            "what": f"zq router + zq workers -n {zq_figures.WORKER_COUNT}, examples.tasks.add, "
                    f"--results {args.results}",
            "delay": throughput["delay"],
            "group": throughput["group"],
            "latency_ipc": latency["zq_ipc"],
            "latency_tcp": latency["zq_tcp"],
        },
        "ratios": compute_ratios(throughput, latency),
        "aims": AIMS,
        "duration_s": round(time.perf_counter() - started, 1),
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _skeleton_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skeleton-window", type=_positive_int, default=None, metavar="N",
                        help="at most N skeleton messages in flight during its throughput "
                             "passes (default: all of them, sent back to back)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv, _skeleton_options)
    return run_report(report, args)


if __name__ == "__main__":
    sys.exit(main())
