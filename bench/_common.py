"""Helpers shared by the benchmarks: percentiles, rates, free ports, the machine's description."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq

FULL = {"tasks": 10_000, "latency_samples": 2_000, "latency_block": 200, "warmup": 200}
QUICK = {"tasks": 1_000, "latency_samples": 300, "latency_block": 100, "warmup": 50}
# Untimed round trips at the start of each latency block, after switching targets.
BLOCK_WARMUP = 5

# A latency target: (count, warmup) -> ``count`` round-trip times in seconds.
LatencyTarget = Callable[[int, int], list[float]]


def run_report(report: Callable[[argparse.Namespace], dict[str, Any]],
               args: argparse.Namespace,
               succeeded: Callable[[dict[str, Any]], bool] = lambda document: True) -> int:
    """Run a benchmark and print its JSON document; the exit code of its ``main``.

    SIGTERM is taken as Ctrl-C, so that every process the benchmark started is stopped by
    the ``finally`` blocks on the way out.
    """
    from zq.testing import ClusterError

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        document = report(args)
    except (BenchError, ClusterError) as exc:
        log(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        return 130
    print(json.dumps(document, indent=2))
    return 0 if succeeded(document) else 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class BenchError(RuntimeError):
    """A benchmark could not produce a trustworthy figure (a wrong result, a timeout)."""


def log(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the JSON document."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of values already sorted in ascending order."""
    if not sorted_values:
        raise BenchError("no samples to take a percentile of")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(samples_s: Sequence[float]) -> dict[str, Any]:
    """p50, p99, mean and max of round-trip times given in seconds, reported in ms."""
    ordered = sorted(samples_s)
    return {
        "samples": len(ordered),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def rate_per_s(count: int, duration_s: float) -> float:
    return round(count / duration_s, 1) if duration_s > 0 else float("inf")


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def free_tcp_port() -> int:
    """A port on 127.0.0.1 that the OS had free a moment ago (bound to 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def zq_revision(repo: Path) -> str | None:
    """The commit the zq package was measured at, with ``+dirty`` if zq/ had local edits."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "zq")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    load_1m, load_5m, _ = os.getloadavg()
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "load_average_1m_5m_at_start": [round(load_1m, 2), round(load_5m, 2)],
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def interleaved_latency(targets: dict[str, LatencyTarget], samples: int, block: int,
                        warmup: int) -> dict[str, dict[str, Any]]:
    """Round trips in alternating blocks, so that a slow minute slows every target alike."""
    collected: dict[str, list[float]] = {name: [] for name in targets}
    for name, target in targets.items():
        log(f"latency: warming up {name} ({warmup} round trips)")
        target(0, warmup)
    log(f"latency: {samples} round trips each, in alternating blocks of {block}")
    for start in range(0, samples, block):
        size = min(block, samples - start)
        for name, target in targets.items():
            collected[name].extend(target(size, BLOCK_WARMUP))
    return {name: latency_summary(values) for name, values in collected.items()}


def parse_args(description: str | None, argv: list[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    """The sizes of a run: ``--quick`` for a smoke run, each size overridable; ``extra``
    adds a script's own options."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--tasks", type=int, help="messages/tasks per throughput figure")
    parser.add_argument("--latency-samples", type=int, help="round trips timed per target")
    parser.add_argument("--latency-block", type=int, help="round trips per interleaved block")
    parser.add_argument("--warmup", type=int, help="untimed round trips per target first")
    parser.add_argument("--results", choices=("sqlite", "memory"), default="sqlite",
                        help="the zq router's results store (sqlite is zq's default)")
    parser.add_argument("--timeout-s", type=float, default=120.0,
                        help="longest wait for any one result or batch before the run fails")
    if extra is not None:
        extra(parser)
    return resolve_sizes(parser, parser.parse_args(argv), FULL, QUICK,
                         ("tasks", "latency_samples", "latency_block"))


def resolve_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  full: dict[str, int], quick: dict[str, int],
                  positive: Sequence[str]) -> argparse.Namespace:
    """Each size not given on the command line from ``quick`` (with ``--quick``) or
    ``full``; those named in ``positive`` must be at least 1, ``warmup`` at least 0."""
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(getattr(args, name) for name in positive) < 1 or args.warmup < 0:
        parser.error("sizes must be positive (--warmup may be 0)")
    return args


def add_round_trips_s(call_add: Callable[[int, int], Any], count: int, warmup: int,
                      who: str) -> list[float]:
    """``call_add(1, 2)`` one after another, each timed and checked; ``warmup`` untimed
    calls first."""
    samples_s = []
    for _ in range(warmup + count):
        started = time.perf_counter()
        value = call_add(1, 2)
        samples_s.append(time.perf_counter() - started)
        if value != 3:
            raise BenchError(f"{who}: add.delay(1, 2) returned {value!r}, expected 3")
    return samples_s[warmup:]


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in (*FULL, "quick", "results", "timeout_s")}
