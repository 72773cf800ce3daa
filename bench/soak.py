"""A soak run: a million tasks through one cluster while every process's memory is watched.

    python bench/soak.py --out /tmp/soak.jsonl > /tmp/soak.json    # 1,000,000 tasks, ~10 min
    python bench/soak.py --tasks 20000 --sample-s 2 --idle-s 0      # a short check

Not run by CI or the tests. One ``zq router --result-expires 60`` and ``zq workers -n 2``
(``examples.tasks``); this process sends ``group(add.s(i, i) ...)`` batches of 1,000, at
most two batches in flight (send batch k+1, then collect batch k), and checks every value.
Every ``--sample-s`` it records the RSS of the router, the results actor (the router's
child), the supervisor, each actor and itself; the size of ``journal.log``,
``results.sqlite3`` and its ``-wal`` (MB: 2**20 bytes); and how many rows the results store
holds. After the last batch it keeps sampling for ``--idle-s`` (by default long enough for
every result to expire). Samples go to ``--out`` as JSON lines; one JSON summary goes to
stdout, also when the run fails part-way (``"finished": false`` and the error), so a partial
run still reports what it saw. With ``--smaps`` (Linux) each process's RSS is also split
into the ``[heap]`` (brk) segment, other anonymous mappings and file-backed mappings, which
tells growth of the C allocator's heap apart from mmap'd memory (pymalloc's arenas, large
blocks) and from shared libraries.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import psutil
import zq_figures
from _common import BenchError, log, machine_info, rate_per_s, run_report, zq_revision

import zq
from zq.testing import Cluster, ClusterError, is_spawned_child

# Send batch k+1 before collecting batch k: the workers never wait on the client, and the
# client never holds more than this many batches.
IN_FLIGHT_BATCHES = 2
# The results actor looks for expired results every tenth of result_expires, within these
# bounds (zq.results; before zq 2ba241e it was once a minute whatever result_expires).
EXPIRE_SWEEP_BOUNDS_S = (1.0, 60.0)
DATA_FILES = ("journal.log", "results.sqlite3", "results.sqlite3-wal")
MB = 1024 * 1024
MILESTONES = {"start": 0.0, "at_10pct": 0.10, "at_50pct": 0.50, "at_90pct": 0.90}
SMAPS_PARTS = ("heap", "anon", "file")


class Watcher:
    """Finds the cluster's processes and takes one sample of their memory and files."""

    def __init__(self, cluster: Cluster, started: float, smaps: bool = False):
        assert cluster.router_process is not None
        self.cluster = cluster
        self.started = started
        self.smaps = smaps
        self.router = psutil.Process(cluster.router_process.pid)
        self.supervisor = psutil.Process(cluster.workers[0].pid)
        self.client = psutil.Process(os.getpid())

    def processes(self) -> dict[str, psutil.Process]:
        """By name; the results actor and the actors are found again at every sample, so a
        replaced process shows up under its new pid."""
        found = {"router": self.router, "supervisor": self.supervisor, "client": self.client}
        for child in _spawned_children(self.router):
            found["results"] = child
        for child in _spawned_children(self.supervisor):
            found[f"actor-{child.pid}"] = child
        return found

    def sample(self, tasks_done: int, phase: str) -> dict[str, Any]:
        rss_mb = {}
        parts_mb = {}
        for name, process in self.processes().items():
            try:
                rss_mb[name] = round(process.memory_info().rss / MB, 1)
            except psutil.Error:
                rss_mb[name] = None
            if self.smaps:
                parts_mb[name] = smaps_parts_mb(process.pid)
        sample = {"t_s": round(time.monotonic() - self.started, 1), "phase": phase,
                  "tasks_done": tasks_done, "rss_mb": rss_mb,
                  "files_mb": self.file_sizes_mb(), "result_rows": self.result_rows(),
                  "router_tasks": self.router_tasks(),
                  "load_1m": round(os.getloadavg()[0], 2)}
        if self.smaps:
            sample["smaps_mb"] = parts_mb
        return sample

    def file_sizes_mb(self) -> dict[str, float | None]:
        sizes: dict[str, float | None] = {}
        for name in DATA_FILES:
            try:
                sizes[name] = round((self.cluster.data_dir / name).stat().st_size / MB, 2)
            except FileNotFoundError:
                sizes[name] = None
        return sizes

    def result_rows(self) -> int | None:
        """Rows in the results store, read through a read-only connection of our own."""
        path = self.cluster.data_dir / "results.sqlite3"
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
                return int(db.execute("SELECT count(*) FROM results").fetchone()[0])
        except sqlite3.Error:
            return None

    def router_tasks(self) -> int | None:
        """Accepted, unfinished tasks the router holds (its stats)."""
        stats = self.cluster.stats(2.0)
        return int(stats["tasks"]) if stats else None


def smaps_parts_mb(pid: int) -> dict[str, float] | None:
    """A process's RSS (MB) by kind of mapping, from /proc/<pid>/smaps: ``heap``, the C
    allocator's brk heap; ``anon``, the other anonymous mappings (mmap'd blocks, pymalloc
    arenas, thread arenas and stacks); ``file``, file-backed ones (libraries, mapped files)."""
    parts = dict.fromkeys(SMAPS_PARTS, 0)
    kind = "anon"
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if fields[0].endswith(":"):
                    if fields[0] == "Rss:":
                        parts[kind] += int(fields[1])
                    continue
                # A mapping's first line: address perms offset dev inode [path].
                path = fields[5] if len(fields) > 5 else ""
                kind = ("heap" if path == "[heap]" else "file" if path.startswith("/")
                        else "anon")
    except OSError:
        return None
    return {kind: round(kb / 1024, 1) for kind, kb in parts.items()}


def _spawned_children(parent: psutil.Process) -> Iterator[psutil.Process]:
    """Children started by multiprocessing's spawn, not its resource tracker."""
    try:
        children = parent.children()
    except psutil.Error:
        return
    for child in children:
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if is_spawned_child(cmdline) and "resource_tracker" not in cmdline:
            yield child


class Sampler:
    """Takes a sample every ``every_s`` (when asked), keeps it and writes it to ``out``."""

    def __init__(self, watcher: Watcher, every_s: float, out: IO[str] | None):
        self.watcher = watcher
        self.every_s = every_s
        self.out = out
        self.samples: list[dict[str, Any]] = []
        self.next_at = 0.0

    def take(self, tasks_done: int, phase: str) -> dict[str, Any]:
        sample = self.watcher.sample(tasks_done, phase)
        self.samples.append(sample)
        self.next_at = time.monotonic() + self.every_s
        if self.out is not None:
            self.out.write(json.dumps(sample) + "\n")
            self.out.flush()
        return sample

    def maybe(self, tasks_done: int, phase: str) -> dict[str, Any] | None:
        if time.monotonic() >= self.next_at:
            return self.take(tasks_done, phase)
        return None


def _check(values: list[Any], first: int) -> None:
    for offset, value in enumerate(values):
        if value != 2 * (first + offset):
            raise BenchError(f"add({first + offset}, {first + offset}) returned {value!r}, "
                             f"expected {2 * (first + offset)}")


def collect(batch: tuple[int, int, zq.GroupResult], timeout_s: float) -> None:
    """Wait for one batch (bounded by ``timeout_s``) and check every value."""
    first, size, result = batch
    try:
        values = result.get(timeout=timeout_s)
    except zq.TimeoutError:
        raise BenchError(f"the batch of tasks {first}..{first + size - 1} was not done "
                         f"within {timeout_s:g}s") from None
    if len(values) != size:
        raise BenchError(f"the batch starting at {first} gave {len(values)} values, not {size}")
    _check(values, first)


class Progress:
    """How far the run got, kept up to date so that a failure can still be reported."""

    def __init__(self) -> None:
        self.tasks_done = 0
        self.first_task_id: str | None = None
        self.send_done_s: float | None = None


def run_batches(add: zq.Task, args: argparse.Namespace, sampler: Sampler,
                progress: Progress) -> None:
    """Send ``args.tasks`` tasks in groups of ``args.batch``, keeping at most
    IN_FLIGHT_BATCHES in flight, collecting and checking each."""
    in_flight: deque[tuple[int, int, zq.GroupResult]] = deque()
    next_index = 0
    while progress.tasks_done < args.tasks:
        while next_index < args.tasks and len(in_flight) < IN_FLIGHT_BATCHES:
            size = min(args.batch, args.tasks - next_index)
            result = zq.group(add.s(i, i) for i in range(next_index, next_index + size)) \
                .apply_async()
            progress.first_task_id = progress.first_task_id or result.results[0].id
            in_flight.append((next_index, size, result))
            next_index += size
        batch = in_flight.popleft()
        collect(batch, args.timeout_s)
        progress.tasks_done += batch[1]
        if sampler.maybe(progress.tasks_done, "load"):
            log(f"{progress.tasks_done:,} tasks done")


def idle(sampler: Sampler, tasks_done: int, idle_s: float) -> None:
    """Keep sampling with no load, so that the last results can be seen to expire."""
    deadline = time.monotonic() + idle_s
    while time.monotonic() < deadline:
        time.sleep(max(0.0, min(sampler.next_at, deadline) - time.monotonic()))
        sampler.maybe(tasks_done, "idle")


def _milestone(load: list[dict[str, Any]], fraction: float, total: int) -> dict[str, Any]:
    """The first sample taken with at least ``fraction`` of the tasks done."""
    wanted = fraction * total
    return next((s for s in load if s["tasks_done"] >= wanted), load[-1])


def rss_summary(samples: list[dict[str, Any]], total: int) -> dict[str, dict[str, Any]]:
    """Per process: RSS (MB) at start, 10 %, 50 %, 90 % of the tasks, end of load, after
    the idle time, and the maximum; with the number of samples it was seen in."""
    load = [s for s in samples if s["phase"] in ("start", "load", "end")]
    points = {name: _milestone(load, fraction, total) for name, fraction in MILESTONES.items()}
    points["end"] = load[-1]
    points["after_idle"] = samples[-1]
    names = sorted({name for s in samples for name in s["rss_mb"]})
    summary = {}
    for name in names:
        seen = [s["rss_mb"][name] for s in samples if s["rss_mb"].get(name) is not None]
        summary[name] = {point: sample["rss_mb"].get(name) for point, sample in points.items()}
        summary[name]["max"] = max(seen) if seen else None
        summary[name]["samples"] = len(seen)
        if any("smaps_mb" in s for s in samples):
            summary[name]["smaps_mb"] = {point: (sample.get("smaps_mb") or {}).get(name)
                                         for point, sample in points.items()}
    return summary


def files_over_time(samples: list[dict[str, Any]]) -> list[list[Any]]:
    """[t_s, tasks_done, journal MB, sqlite MB, wal MB, result rows, router tasks] rows."""
    return [[s["t_s"], s["tasks_done"], *(s["files_mb"][name] for name in DATA_FILES),
             s["result_rows"], s["router_tasks"]] for s in samples]


def journal_compactions(samples: list[dict[str, Any]]) -> int:
    """How many times journal.log was seen to shrink between samples."""
    sizes = [s["files_mb"]["journal.log"] or 0.0 for s in samples]
    return sum(1 for before, after in itertools.pairwise(sizes) if after < before)


def summarize(samples: list[dict[str, Any]], progress: Progress, wall_s: float | None,
              args: argparse.Namespace) -> dict[str, Any]:
    sizes = [s["files_mb"] for s in samples]
    rows = [s["result_rows"] for s in samples if s["result_rows"] is not None]
    return {
        "tasks_done": progress.tasks_done,
        "wall_s": round(wall_s, 1) if wall_s else None,
        "tasks_per_s": rate_per_s(progress.tasks_done, wall_s) if wall_s else None,
        "rss_mb": rss_summary(samples, progress.tasks_done or args.tasks),
        "journal": {
            "max_mb": max((s["journal.log"] or 0.0) for s in sizes),
            "end_mb": sizes[-1]["journal.log"],
            "compactions_seen": journal_compactions(samples),
        },
        "results_store": {
            "sqlite_max_mb": max((s["results.sqlite3"] or 0.0) for s in sizes),
            "wal_max_mb": max((s["results.sqlite3-wal"] or 0.0) for s in sizes),
            "rows_max": max(rows) if rows else None,
            "rows_end_of_load": _end_of_load(samples)["result_rows"],
            "rows_after_idle": samples[-1]["result_rows"],
        },
        "files_over_time_columns": ["t_s", "tasks_done", "journal_mb", "sqlite_mb", "wal_mb",
                                    "result_rows", "router_tasks"],
        "files_over_time": files_over_time(samples),
    }


def _end_of_load(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return next((s for s in reversed(samples) if s["phase"] in ("end", "load", "start")),
                samples[-1])


def first_result_state(app: zq.App, task_id: str | None) -> str | None:
    """The first task's state at the end: PENDING once its result has expired."""
    if task_id is None:
        return None
    try:
        return str(app.AsyncResult(task_id).state)
    except zq.ZqError as exc:
        return f"unknown ({type(exc).__name__}: {exc})"


def make_cluster(directory: Path, expires_s: float) -> Cluster:
    return Cluster(directory, app=zq_figures.APP_MODULE, concurrency=zq_figures.WORKER_COUNT,
                   router_args=["--result-expires", f"{expires_s:g}"],
                   workers_args=["-l", "WARNING"],
                   env={"PYTHONPATH": str(zq_figures.REPO_ROOT)}, cwd=zq_figures.REPO_ROOT)


def soak(args: argparse.Namespace, out: IO[str] | None) -> dict[str, Any]:
    """Start the cluster, run the load and the idle time, stop everything (on error too)."""
    progress = Progress()
    error: str | None = None
    wall_s: float | None = None
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zq-soak-")))
        log(f"starting zq router --result-expires {args.expires:g} and zq workers -n 2 "
            f"in {directory}")
        cluster = stack.enter_context(make_cluster(directory, args.expires))
        client = zq_figures.Client(args.timeout_s)
        stack.callback(client.close)
        client.use(cluster.router)
        sampler = Sampler(Watcher(cluster, time.monotonic(), args.smaps), args.sample_s, out)
        sampler.take(0, "start")
        started = time.monotonic()
        try:
            run_batches(client.add, args, sampler, progress)
            wall_s = time.monotonic() - started
            sampler.take(progress.tasks_done, "end")
            log(f"{progress.tasks_done:,} tasks in {wall_s:.0f} s; idle for {args.idle_s:g} s")
            idle(sampler, progress.tasks_done, args.idle_s)
            sampler.take(progress.tasks_done, "idle")
        except (BenchError, zq.ZqError, ClusterError) as exc:
            error = f"{type(exc).__name__}: {exc}\n{cluster.logs()[-4000:]}"
            log(f"FAILED after {progress.tasks_done:,} tasks: {error}")
            wall_s = time.monotonic() - started
            sampler.take(progress.tasks_done, "end")
        state = first_result_state(client.app, progress.first_task_id)
        log("stopping every process")
    return {"finished": error is None, "error": error,
            "first_result_state_at_end": state,
            **summarize(sampler.samples, progress, wall_s, args)}


def report(args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_info()
    revision = zq_revision(BENCH_DIR.parent)
    with ExitStack() as stack:
        out = stack.enter_context(open(args.out, "w")) if args.out else None
        figures = soak(args, out)
    return {"machine": machine, "zq_revision": revision,
            "settings": {"tasks": args.tasks, "batch": args.batch, "expires_s": args.expires,
                         "sample_s": args.sample_s, "idle_s": args.idle_s,
                         "timeout_s": args.timeout_s, "in_flight_batches": IN_FLIGHT_BATCHES,
                         "workers": zq_figures.WORKER_COUNT, "out": args.out,
                         "smaps": args.smaps},
            **figures}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks in all")
    parser.add_argument("--batch", type=int, default=1_000, help="tasks per group")
    parser.add_argument("--expires", type=float, default=60.0,
                        help="the router's --result-expires, seconds")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--idle-s", type=float, default=None,
                        help="seconds to keep sampling after the last batch (default: "
                             "--expires + one expiry sweep + 15 s, enough for every result "
                             "to expire)")
    parser.add_argument("--timeout-s", type=float, default=120.0,
                        help="longest wait for one batch before the run fails")
    parser.add_argument("--out", help="write every sample to this file as JSON lines")
    parser.add_argument("--smaps", action="store_true",
                        help="also split each process's RSS into heap, anonymous and "
                             "file-backed mappings (Linux /proc/<pid>/smaps)")
    args = parser.parse_args(argv)
    if args.idle_s is None:
        args.idle_s = args.expires + expire_sweep_s(args.expires) + 15.0
    if min(args.tasks, args.batch) < 1 or min(args.expires, args.sample_s) <= 0 \
            or args.idle_s < 0:
        parser.error("--tasks, --batch, --expires and --sample-s must be positive")
    return args


def expire_sweep_s(expires_s: float) -> float:
    """How often the results actor sweeps out results older than ``expires_s``."""
    low, high = EXPIRE_SWEEP_BOUNDS_S
    return min(high, max(low, expires_s / 10))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_report(report, args, lambda document: document["finished"])


if __name__ == "__main__":
    sys.exit(main())
