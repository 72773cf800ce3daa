"""zq against its peers (Celery, Huey, Dramatiq, RQ, each on Redis) and a bare pyzmq skeleton,
side by side, in one run, on the same load.

    pip install -r bench/requirements.txt && apt-get install -y redis-server   # bench only
    python bench/peers.py            # 2 rounds of 5,000 tasks and 300 round trips each
    python bench/peers.py --quick    # 1 round of 1,000 tasks and 50 round trips
    python bench/peers.py --skip rq --skip huey

Every system runs at the same time, with 2 worker processes each: zq (``zq router`` on tcp
and ``zq workers -n 2``), Celery (prefork -c 2), Huey (``-k process -w 2``), Dramatiq
(``-p 2 -t 8``) and RQ (``worker-pool -n 2``), each peer with a private redis-server as
broker and result store, and the skeleton of bench/baseline.py (1,000 messages in flight).
The load is the peers' own method: N no-op ``add(i, i)`` enqueued back to back with
``delay()`` (or the peer's equivalent), then every result collected and checked; then
sequential ``delay().get()`` round trips. In each round every system takes the throughput
load in turn, then the round trips in alternating blocks; the next round goes in the
reverse order, so that a noisy minute hits all alike.

A peer whose package or redis-server is missing is skipped with the reason; one that fails
is stopped and reported as failed (exit status 1) while the others are still measured. The
JSON goes to stdout, a table to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import zq  # noqa: E402

import peer_systems  # noqa: E402
from _common import (  # noqa: E402
    BLOCK_WARMUP,
    BenchError,
    latency_summary,
    log,
    machine_info,
    ratio,
    resolve_sizes,
    run_report,
    zq_revision,
)
from _services import with_logs  # noqa: E402
from peer_systems import System  # noqa: E402

FULL = {"tasks": 5_000, "latency_samples": 300, "latency_block": 100, "warmup": 50,
        "rounds": 2}
QUICK = {"tasks": 1_000, "latency_samples": 50, "latency_block": 50, "warmup": 20,
         "rounds": 1}
SKELETON_WINDOW = 1_000
PEERS = ("skeleton", "celery", "huey", "dramatiq", "rq")
METHOD = ("Every system runs at once, each with 2 worker processes. A round: each system in "
          "turn enqueues `tasks` no-op add(i, i) back to back with its own enqueue call and "
          "then collects and checks every result (the skeleton: `tasks` echoes with at most "
          "`skeleton_window` in flight); then `latency_samples` sequential enqueue-and-wait "
          "round trips per system, in alternating blocks of `latency_block` (each block after "
          f"{BLOCK_WARMUP} untimed ones). Round 1 goes zq, skeleton, celery, huey, dramatiq, "
          "rq; each next round in the reverse order of the one before. Throughput is the "
          "mean over rounds; latency percentiles are over every round's samples. ratios: zq's "
          "figure divided by the peer's (throughput above 1, latency below 1: zq is faster).")


def make_systems(args: argparse.Namespace) -> list[System]:
    return [peer_systems.Zq(args.timeout_s, args.results),
            peer_systems.Skeleton(args.timeout_s, args.skeleton_window),
            peer_systems.Celery(args.timeout_s), peer_systems.Huey(args.timeout_s),
            peer_systems.Dramatiq(args.timeout_s), peer_systems.Rq(args.timeout_s)]


class Run:
    """The systems of one run, their state (measured, skipped, failed) and their figures."""

    def __init__(self, args: argparse.Namespace, systems: list[System]):
        self.args = args
        self.systems = systems
        self.status: dict[str, dict[str, Any]] = {}
        self.stacks: dict[str, ExitStack] = {}
        self.throughput: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
        self.samples_s: dict[str, list[list[float]]] = {s.name: [] for s in systems}

    def active(self) -> list[System]:
        return [s for s in self.systems if self.status[s.name]["status"] == "running"]

    def start_all(self, outer: ExitStack, directory: Path) -> None:
        for system in self.systems:
            reason = ("--skip" if system.name in self.args.skip else system.missing())
            if reason is not None:
                self.status[system.name] = {"status": "skipped", "reason": reason}
                log(f"{system.name}: skipped: {reason}")
                continue
            log(f"{system.name}: starting ({system.what})")
            stack = outer.enter_context(ExitStack())
            self.stacks[system.name] = stack
            (directory / system.name).mkdir()
            self.status[system.name] = {"status": "running"}
            self.attempt(system, "starting", system.start, stack, directory / system.name)
            if self.status[system.name]["status"] == "running":
                self.status[system.name]["versions"] = system.versions()

    def attempt(self, system: System, what: str, step: Callable[..., Any], *args: Any) -> Any:
        """``step(*args)``, one step of ``system``; a peer that fails is stopped and marked
        failed, and the run goes on without it. zq failing fails the run (with its logs)."""
        try:
            return step(*args)
        except (BenchError, zq.ZqError) as exc:
            if system.name == "zq":
                raise with_logs(exc, system.log_tails) from None
            error: Exception = with_logs(exc, system.log_tails)
        except Exception as exc:  # a peer library's own error: the peer failed
            if system.name == "zq":
                raise
            error = with_logs(exc, system.log_tails)
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        log(f"{system.name}: FAILED while {what}: {error}")
        self.status[system.name] = {"status": "failed", "reason": f"{what}: {first_line}",
                                    "error": str(error)[-4000:]}
        log(f"{system.name}: stopping it; the others go on")
        self.stacks[system.name].close()
        return None

    def warm_up(self) -> None:
        for system in self.active():
            log(f"{system.name}: warming up ({self.args.warmup} round trips)")
            self.attempt(system, "warming up", system.latency_samples_s, 0, self.args.warmup)

    def round(self, number: int) -> None:
        order = self.active()
        if number % 2 == 1:
            order.reverse()
        log(f"round {number + 1} of {self.args.rounds}: "
            f"{', '.join(s.name for s in order)}")
        for system in order:
            if self.status[system.name]["status"] != "running":
                continue
            log(f"  {system.name}: the throughput load ({self.args.tasks} tasks)")
            figures = self.attempt(system, f"the throughput load of round {number + 1}",
                                   system.delay_throughput, self.args.tasks)
            if figures is not None:
                self.throughput[system.name].append(figures)
                log(f"  {system.name}: {figures['end_to_end_tasks_per_s']:,.0f} tasks/s")
        collected: dict[str, list[float]] = {s.name: [] for s in order}
        log(f"  round trips: {self.args.latency_samples} each, in alternating blocks of "
            f"{self.args.latency_block}")
        for start in range(0, self.args.latency_samples, self.args.latency_block):
            size = min(self.args.latency_block, self.args.latency_samples - start)
            for system in order:
                if self.status[system.name]["status"] != "running":
                    continue
                samples = self.attempt(system, f"the round trips of round {number + 1}",
                                       system.latency_samples_s, size, BLOCK_WARMUP)
                if samples is not None:
                    collected[system.name].extend(samples)
        for name, samples in collected.items():
            if self.status[name]["status"] == "running":
                self.samples_s[name].append(samples)
                log(f"  {name}: p50 {latency_summary(samples)['p50_ms']:.2f} ms")


def measure(args: argparse.Namespace) -> Run:
    """Start every system, take the figures, stop everything (on error and Ctrl-C too)."""
    run = Run(args, make_systems(args))
    with ExitStack() as outer:
        directory = Path(outer.enter_context(tempfile.TemporaryDirectory(prefix="zq-peers-")))
        run.start_all(outer, directory)
        run.warm_up()
        for number in range(args.rounds):
            run.round(number)
        log("stopping every process")
    for name, state in run.status.items():
        if state["status"] == "running":
            state["status"] = "measured"
    return run


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 1)


def system_document(run: Run, system: System) -> dict[str, Any]:
    state = run.status[system.name]
    document: dict[str, Any] = {"what": system.what, **state}
    if state["status"] != "measured":
        return document
    rounds = run.throughput[system.name]
    sends = [r["send_tasks_per_s"] for r in rounds if r["send_tasks_per_s"] is not None]
    document["throughput"] = {
        "end_to_end_tasks_per_s": _mean([r["end_to_end_tasks_per_s"] for r in rounds]),
        "send_tasks_per_s": _mean(sends) if sends else None,
        "rounds": rounds}
    pooled = [sample for samples in run.samples_s[system.name] for sample in samples]
    document["latency"] = {**latency_summary(pooled),
                           "rounds": [latency_summary(s) for s in run.samples_s[system.name]]}
    return document


def compute_ratios(documents: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """zq's figures divided by each measured peer's (the mean, and round by round)."""
    zq_doc = documents["zq"]
    ratios: dict[str, dict[str, Any]] = {}
    for name in PEERS:
        peer = documents[name]
        if peer["status"] != "measured" or zq_doc["status"] != "measured":
            continue
        zq_rounds = zq_doc["throughput"]["rounds"]
        peer_rounds = peer["throughput"]["rounds"]
        ratios[name] = {
            "throughput": ratio(zq_doc["throughput"]["end_to_end_tasks_per_s"],
                                peer["throughput"]["end_to_end_tasks_per_s"]),
            "throughput_per_round": [ratio(z["end_to_end_tasks_per_s"],
                                           p["end_to_end_tasks_per_s"])
                                     for z, p in zip(zq_rounds, peer_rounds)],
            "latency_p50": ratio(zq_doc["latency"]["p50_ms"], peer["latency"]["p50_ms"]),
            "latency_p99": ratio(zq_doc["latency"]["p99_ms"], peer["latency"]["p99_ms"]),
        }
    return ratios


def table(documents: dict[str, dict[str, Any]], ratios: dict[str, dict[str, Any]]) -> str:
    """The figures as a plain-text table for a person (the JSON has everything)."""
    header = ("system", "tasks/s", "send/s", "p50 ms", "p99 ms", "zq/peer tasks/s",
              "zq/peer p50", "zq/peer p99")
    rows = [header]
    notes = []
    for name, doc in documents.items():
        if doc["status"] != "measured":
            notes.append(f"{name}: {doc['status']}: {doc['reason']}")
            continue
        throughput, latency = doc["throughput"], doc["latency"]
        send = throughput["send_tasks_per_s"]
        r = ratios.get(name)
        rows.append((name, f"{throughput['end_to_end_tasks_per_s']:,.0f}",
                     "-" if send is None else f"{send:,.0f}",
                     f"{latency['p50_ms']:.2f}", f"{latency['p99_ms']:.2f}",
                     "-" if r is None else f"{r['throughput']:.2f}",
                     "-" if r is None else f"{r['latency_p50']:.2f}",
                     "-" if r is None else f"{r['latency_p99']:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + notes)


def report(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    machine = machine_info()
    revision = zq_revision(BENCH_DIR.parent)
    run = measure(args)
    documents = {system.name: system_document(run, system) for system in run.systems}
    ratios = compute_ratios(documents)
    print(f"\nzq {revision}, {args.rounds} round(s) of {args.tasks:,} tasks and "
          f"{args.latency_samples:,} round trips\n{table(documents, ratios)}\n",
          file=sys.stderr, flush=True)
    return {
        "machine": machine,
        "zq_revision": revision,
        "settings": {name: getattr(args, name) for name in
                     (*FULL, "quick", "skeleton_window", "results", "timeout_s", "skip")},
        "method": METHOD,
        "systems": documents,
        "ratios_zq_vs": ratios,
        "duration_s": round(time.perf_counter() - started, 1),
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 round of 1,000 tasks and 50 round trips")
    parser.add_argument("--tasks", type=int, help="tasks per throughput load (5,000)")
    parser.add_argument("--latency-samples", type=int,
                        help="round trips timed per system and round (300)")
    parser.add_argument("--latency-block", type=int, help="round trips per alternating block")
    parser.add_argument("--warmup", type=int, help="untimed round trips per system first")
    parser.add_argument("--rounds", type=int, help="rounds over every system (2)")
    parser.add_argument("--skeleton-window", type=_positive_int, default=SKELETON_WINDOW,
                        metavar="N", help="skeleton messages in flight (1,000)")
    parser.add_argument("--results", choices=("sqlite", "memory"), default="sqlite",
                        help="the zq router's results store (sqlite is zq's default)")
    parser.add_argument("--skip", action="append", default=[], choices=PEERS,
                        help="leave this peer out (repeatable)")
    parser.add_argument("--timeout-s", type=float, default=120.0,
                        help="longest wait for a start or for any one result (for zq, "
                             "for all of a throughput load's results)")
    return resolve_sizes(parser, parser.parse_args(argv), FULL, QUICK,
                         ("tasks", "latency_samples", "latency_block", "rounds"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def succeeded(document: dict[str, Any]) -> bool:
        return all(doc["status"] != "failed" for doc in document["systems"].values())

    return run_report(report, args, succeeded)


if __name__ == "__main__":
    sys.exit(main())
