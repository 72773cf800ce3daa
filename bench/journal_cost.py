"""Measure what the router's journal costs, side by side in one run; print one JSON document.

    python bench/journal_cost.py            # about 2 minutes: 3 passes of each figure
    python bench/journal_cost.py --quick    # about 30 s: a smoke run
    python bench/journal_cost.py --passes 5 --tasks 20000 --delay-tasks 3000

Three clusters run at once, differing only in the router's journal:

  * ``none``: no journal at all. zq cannot switch its journal off, so this script starts
    that router itself with :class:`NullJournal` put in place of ``zq.router.journal.Journal``
    (zq's own code is not changed; the router never writes ``journal.log``).
  * ``default``: ``zq router`` as shipped: each step's records written with one
    ``write`` (flushed to the OS) before ACCEPTED.
  * ``fsync``: ``zq router --journal-fsync``: answers wait for an ``fsync`` that a thread
    runs beside the router's loop; each covers every step written before it began (a group
    commit). The router's counts of journal writes and fsyncs are reported.

Figures: a ``group`` of N ``add.s(i, i)`` (sent in batches of 500) and a loop of M
``add.delay(i, i)`` (one SUBMIT, so one router step and one journal write, per task),
each collected and every value checked. The configurations take turns within each pass
(none, default, fsync; the next pass in reverse order), so that a slow minute on this
shared machine slows all of them alike. Progress goes to stderr; stdout carries only JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import psutil
import zq_figures
from zq.router.journal import Replayed
from _common import (
    BenchError,
    log,
    machine_info,
    ratio,
    resolve_sizes,
    run_report,
    zq_revision,
)

import zq
from zq.testing import Cluster, Process

# argv[1] that makes this script run a journal-less router instead of measuring.
SERVE_ROUTER_WITHOUT_JOURNAL = "--serve-router-without-journal"
CONFIGS = ("none", "default", "fsync")
ROUTER_ARGS = {"none": [], "default": [], "fsync": ["--journal-fsync"]}
FULL = {"tasks": 10_000, "delay_tasks": 2_000, "passes": 3, "warmup": 200}
QUICK = {"tasks": 2_000, "delay_tasks": 500, "passes": 2, "warmup": 50}
FSYNC_PROBES = 200
METHOD = ("Three clusters (router + zq workers -n 2) run at once: journal none (a null "
          "journal put in by this script), default (write before ACCEPTED), fsync "
          "(--journal-fsync). Each pass takes the group figure on all three, then the delay "
          "figure on all three; odd passes go none, default, fsync, even passes the reverse. "
          "Ratios are of the means over the passes; per_pass ratios pair the passes.")


class NullJournal:
    """The journal's interface with nothing behind it: what the router costs without one."""

    def __init__(self, path: Path, *, fsync: bool = False):
        self.path = path
        self.fsync = False
        self.written = self.synced = self.syncs = 0
        self.wakeup_fd = None
        self.error = None
        self.write_error = None
        self.pending = 0

    def open(self) -> Replayed:
        return Replayed()

    def part(self, body_id: str, index: int, event: Any) -> None:
        pass

    def updated(self, raw_header: bytes, body: bytes) -> None:
        pass

    def finished_attempts(self) -> list[tuple[str, int]]:
        return []

    def accepted(self, raw_header: bytes, body: bytes) -> None:
        pass

    def finished(self, task_id: str, retries: int, event: Any = None) -> int | None:
        return None

    def stored(self, upto: int) -> None:
        pass

    def revoked(self, task_id: str) -> None:
        pass

    def commit(self) -> bool:
        return True

    def should_compact(self) -> bool:
        return False

    def compact(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


def serve_router_without_journal(cli_args: list[str]) -> None:
    """``zq router <cli_args>`` with :class:`NullJournal` in place of the journal."""
    import zq.router.loop
    from zq.cli import main as cli_main

    zq.router.loop.Journal = NullJournal  # type: ignore[misc, assignment]
    cli_main(cli_args, prog_name="zq")


class _JournalLessRouter(Process):
    """A router process started as ``python bench/journal_cost.py --serve-router-... ARGS``."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str],
                 cwd: Path | None = None):
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), SERVE_ROUTER_WITHOUT_JOURNAL, *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True)


class JournalLessCluster(Cluster):
    """A Cluster whose router runs without a journal; its workers are the usual ones."""

    def start_router(self, *extra: str) -> Process:
        args = ["router", "--bind", self.router, "--data-dir", str(self.data_dir),
                *self.router_args, *extra]
        self.router_process = _JournalLessRouter("router", args, self._log_path("router"),
                                                 self.env, self.cwd)
        self.wait_for(lambda s: True, what="the router to answer")
        return self.router_process


def make_cluster(directory: Path, config: str) -> Cluster:
    cls = JournalLessCluster if config == "none" else Cluster
    return cls(directory, app=zq_figures.APP_MODULE, concurrency=zq_figures.WORKER_COUNT,
               router_args=ROUTER_ARGS[config],
               env={"PYTHONPATH": str(zq_figures.REPO_ROOT)}, cwd=zq_figures.REPO_ROOT)


def fsync_probe_ms(directory: Path, count: int = FSYNC_PROBES) -> dict[str, Any]:
    """What one small append plus ``fsync`` costs on the data dir's filesystem."""
    path = directory / "fsync-probe"
    samples_s = []
    with open(path, "ab", buffering=0) as f:
        for _ in range(count):
            started = time.perf_counter()
            f.write(b"x" * 200)
            os.fsync(f.fileno())
            samples_s.append(time.perf_counter() - started)
    path.unlink()
    ordered = sorted(samples_s)
    return {"samples": count, "p50_ms": round(ordered[count // 2] * 1000, 3),
            "p99_ms": round(ordered[min(count - 1, int(count * 0.99))] * 1000, 3),
            "filesystem": _filesystem(directory)}


def _filesystem(directory: Path) -> str | None:
    """The type of the filesystem holding ``directory`` (the longest matching mount point)."""
    resolved = str(directory.resolve())
    mounts = [p for p in psutil.disk_partitions(all=True)
              if resolved == p.mountpoint or resolved.startswith(p.mountpoint.rstrip("/") + "/")]
    if not mounts:
        return None
    mount = max(mounts, key=lambda p: len(p.mountpoint))
    return f"{mount.fstype} on {mount.device} at {mount.mountpoint}"


def _order(pass_index: int) -> tuple[str, ...]:
    return CONFIGS if pass_index % 2 == 0 else tuple(reversed(CONFIGS))


def take_passes(client: zq_figures.Client, routers: dict[str, str],
                args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every figure on every configuration, the configurations taking turns."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {"group": [], "delay": []} for name in CONFIGS}
    for index in range(args.passes):
        for name in _order(index):
            log(f"pass {index + 1}/{args.passes}: {name}: a group of {args.tasks}")
            client.use(routers[name])
            runs[name]["group"].append(client.group_throughput(args.tasks))
        for name in _order(index):
            log(f"pass {index + 1}/{args.passes}: {name}: {args.delay_tasks} add.delay")
            client.use(routers[name])
            runs[name]["delay"].append(client.delay_throughput(args.delay_tasks))
    return runs


def warm_up(client: zq_figures.Client, routers: dict[str, str], count: int) -> None:
    for name in CONFIGS:
        log(f"warming up {name}: a group of {count}")
        client.use(routers[name])
        if count:
            client.group_throughput(count)


def _rates(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [run[key] for run in runs]


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per configuration: each pass's tasks/s, their mean and median."""
    keys = {"group": "tasks_per_s", "delay": "end_to_end_tasks_per_s"}
    summary: dict[str, Any] = {}
    for name, figures in runs.items():
        summary[name] = {}
        for kind, key in keys.items():
            rates = _rates(figures[kind], key)
            summary[name][kind] = {"passes_tasks_per_s": rates,
                                   "mean_tasks_per_s": round(statistics.fmean(rates), 1),
                                   "median_tasks_per_s": round(statistics.median(rates), 1)}
        summary[name]["delay"]["send_passes_tasks_per_s"] = _rates(figures["delay"],
                                                                   "send_tasks_per_s")
    return summary


def compute_ratios(summary: dict[str, Any]) -> dict[str, Any]:
    """fsync/default (the brief's b/a), default/none and fsync/none, of the means and pass
    by pass."""
    pairs = {"fsync_vs_default": ("fsync", "default"), "default_vs_none": ("default", "none"),
             "fsync_vs_none": ("fsync", "none")}
    ratios: dict[str, Any] = {}
    for label, (top, bottom) in pairs.items():
        for kind in ("group", "delay"):
            a, b = summary[top][kind], summary[bottom][kind]
            ratios[f"{kind}_{label}"] = ratio(a["mean_tasks_per_s"], b["mean_tasks_per_s"])
            ratios[f"{kind}_{label}_per_pass"] = [
                ratio(x, y) for x, y in zip(a["passes_tasks_per_s"], b["passes_tasks_per_s"])]
    return ratios


def journal_bytes(clusters: dict[str, Cluster]) -> dict[str, int | None]:
    """``journal.log``'s size at the end: proves which routers journaled (none must not)."""
    sizes: dict[str, int | None] = {}
    for name, cluster in clusters.items():
        path = cluster.data_dir / "journal.log"
        sizes[name] = path.stat().st_size if path.exists() else None
    return sizes


def _with_logs(exc: BaseException, clusters: dict[str, Cluster]) -> BenchError:
    """The error with the tail of each cluster's logs, whose directory is about to go."""
    logs = "\n".join(f"--- zq {name} cluster logs (tail) ---\n{cluster.logs()[-3000:]}"
                     for name, cluster in clusters.items())
    return BenchError(f"{type(exc).__name__}: {exc}\n{logs}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the three clusters, take the figures, stop everything (on error too)."""
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zq-journal-")))
        fsync = fsync_probe_ms(directory)
        log(f"fsync probe on {fsync['filesystem']}: p50 {fsync['p50_ms']} ms")
        log("starting three clusters (journal none, default, fsync)")
        clusters = {name: stack.enter_context(make_cluster(directory / name, name))
                    for name in CONFIGS}
        client = zq_figures.Client(args.timeout_s)
        stack.callback(client.close)
        routers = {name: cluster.router for name, cluster in clusters.items()}
        try:
            warm_up(client, routers, args.warmup)
            runs = take_passes(client, routers, args)
        except (BenchError, zq.ZqError) as exc:
            raise _with_logs(exc, clusters) from None
        sizes = journal_bytes(clusters)
        counters = {name: cluster.stats().get("journal") for name, cluster in clusters.items()}
        if sizes["none"] is not None:
            raise BenchError("the journal-less router wrote a journal.log: the null journal "
                             "was not in place, so 'none' measured the real journal")
        log("stopping every process")
    return {"runs": runs, "journal_bytes_at_end": sizes, "journal_counters": counters,
            "fsync_probe": fsync}


def report(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    machine = machine_info()
    revision = zq_revision(BENCH_DIR.parent)
    figures = measure(args)
    summary = summarize(figures["runs"])
    tasks_journaled = args.passes * (args.tasks + args.delay_tasks) + args.warmup
    return {
        "machine": machine,
        "zq_revision": revision,
        "settings": {name: getattr(args, name) for name in (*FULL, "quick", "timeout_s")},
        "method": METHOD,
        "configs": {"none": "no journal (NullJournal, this script's router)",
                    "default": "zq router (write + flush to the OS before ACCEPTED)",
                    "fsync": "zq router --journal-fsync"},
        "throughput": summary,
        "ratios": compute_ratios(summary),
        "journal_bytes_at_end": figures["journal_bytes_at_end"],
        "journal_bytes_per_task": {
            name: round(size / tasks_journaled, 1) if size else None
            for name, size in figures["journal_bytes_at_end"].items()},
        # writes: steps that journaled something; syncs: fsyncs (each covering every write
        # before it); tasks: tasks journaled, for the fsyncs per task.
        "journal_counters": figures["journal_counters"],
        "tasks_journaled_per_router": tasks_journaled,
        "fsync_probe": figures["fsync_probe"],
        "duration_s": round(time.perf_counter() - started, 1),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--tasks", type=int, help="tasks in each group figure")
    parser.add_argument("--delay-tasks", type=int, help="add.delay calls in each delay figure")
    parser.add_argument("--passes", type=int, help="passes over every configuration")
    parser.add_argument("--warmup", type=int, help="an untimed group of this size first")
    parser.add_argument("--timeout-s", type=float, default=120.0,
                        help="longest wait for any one figure before the run fails")
    return resolve_sizes(parser, parser.parse_args(argv), FULL, QUICK,
                         ("tasks", "delay_tasks", "passes"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_report(report, args)


if __name__ == "__main__":
    if sys.argv[1:2] == [SERVE_ROUTER_WITHOUT_JOURNAL]:
        serve_router_without_journal(sys.argv[2:])
    else:
        sys.exit(main())
