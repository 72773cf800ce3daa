"""What a ``zq dashboard`` costs the cluster it watches, side by side in one run; prints JSON.

    python bench/dashboard.py            # about 2 minutes: 3 passes each, groups of 20,000
    python bench/dashboard.py --quick    # about 20 s: a smoke run (groups of 2,000)
    python bench/dashboard.py --passes 5 --tasks 20000
    python bench/dashboard.py --watch-reference   # also a bare watcher of every change

One cluster (``zq router`` on ipc, ``zq workers -n 2``) runs throughout. Each pass sends a
``group`` of N ``add.s(i, i)`` (as bench/run.py does) and collects every result, checked;
passes alternate without and with a dashboard (without, with, with, without, ...), so a
slow minute on this shared machine slows both alike. For a pass with a dashboard, a
``zq dashboard`` process is started before it and stopped after, and a client follows its
live stream (``/api/events``) as an open page does. Reported per pass: the group's tasks/s;
with a dashboard also its CPU seconds and share of one core during the group, the SUCCESS
states it counted (``zq_events_total`` in ``/metrics``) against the tasks run, and how
long after the group's last result it had counted them all. With ``--watch-reference``
passes with a bare watcher of every change (zq's own, doing nothing with what it reads)
take turns too: the cost of following the stream at all. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import psutil  # noqa: E402

from zq.testing import Cluster, Process  # noqa: E402

from _common import BenchError, log, machine_info, run_report, zq_revision  # noqa: E402
from zq_figures import Client, make_cluster  # noqa: E402

REPO_ROOT = BENCH_DIR.parent
TASK = "examples.tasks.add"
_URL = re.compile(r"zq dashboard at (http://\S+/)")


class Dashboard:
    """A ``zq dashboard`` process and a reader of its live stream, as an open page."""

    def __init__(self, cluster: Cluster, directory: Path, timeout_s: float):
        self.process = Process("dashboard", ["dashboard", "--router", cluster.router,
                                             "--bind", "127.0.0.1:0"],
                               directory / f"dashboard-{time.monotonic_ns()}.log",
                               cluster.env, REPO_ROOT)
        self.url = self._wait_url(timeout_s)
        self._wait_ready(timeout_s)
        self.ps = psutil.Process(self.process.pid)
        self._stop = threading.Event()
        self.messages = 0
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()

    def _wait_url(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = _URL.search(self.process.log())
            if found:
                return found.group(1)
            if not self.process.alive():
                break
            time.sleep(0.05)
        raise BenchError(f"the dashboard did not start:\n{self.process.log()[-2000:]}")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            summary = self.get("api/overview")["summary"]
            if summary["router_up"] and summary["results_up"] and summary["workers_up"]:
                return
            time.sleep(0.1)
        raise BenchError("the dashboard did not see the cluster")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            body = answer.read()
        return body.decode() if path == "metrics" else json.loads(body)

    def successes(self) -> int:
        pattern = re.compile(r'zq_events_total\{state="SUCCESS",task="' + re.escape(TASK)
                             + r'"\} ([0-9.e+]+)')
        found = pattern.search(self.get("metrics"))
        return int(float(found.group(1))) if found else 0

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def _follow(self) -> None:
        with urllib.request.urlopen(self.url + "api/events", timeout=10) as stream:
            while not self._stop.is_set():
                line = stream.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    self.messages += 1

    def stop(self) -> None:
        self._stop.set()
        self.process.stop()
        self._reader.join(5)


def _router_cpu_s(cluster: Cluster) -> tuple[float, float]:
    """CPU seconds used so far by the router and by its results actor (its child)."""
    assert cluster.router_process is not None
    router = psutil.Process(cluster.router_process.pid)
    own = router.cpu_times()
    results = sum(c.cpu_times().user + c.cpu_times().system
                  for c in router.children() if "results" in " ".join(c.cmdline())
                  or "spawn_main" in " ".join(c.cmdline()))
    return own.user + own.system, results


# The floor any follower of every state change costs: zq's own watcher, doing nothing
# with what it reads (the results actor publishes each change to it, as to a dashboard).
_BARE_WATCHER = ("import sys\nfrom zq import App\n"
                 "for _ in App(router=sys.argv[1]).results_client().watch(None): pass\n")


def one_pass(client: Client, cluster: Cluster, directory: Path, tasks: int, kind: str,
             timeout_s: float) -> dict[str, Any]:
    with_dash = kind == "dashboard"
    dashboard = Dashboard(cluster, directory, timeout_s) if with_dash else None
    watcher = None
    if kind == "watch":
        watcher = Process("watch", [], directory / f"watch-{time.monotonic_ns()}.log",
                          cluster.env, REPO_ROOT, command=[sys.executable, "-c", _BARE_WATCHER,
                                                           cluster.router])
        time.sleep(1.0)  # subscribed and past its snapshot
    try:
        before = dashboard.successes() if dashboard else 0
        cpu_before = dashboard.cpu_s() if dashboard else 0.0
        router_before = _router_cpu_s(cluster)
        figures = client.group_throughput(tasks)
        router_after = _router_cpu_s(cluster)
        out: dict[str, Any] = {"kind": kind, "dashboard": with_dash,
                               "tasks_per_s": figures["tasks_per_s"],
                               "duration_s": figures["duration_s"],
                               "router_cpu_s": round(router_after[0] - router_before[0], 3),
                               "results_actor_cpu_s": round(router_after[1] - router_before[1],
                                                            3)}
        if dashboard is None:
            if watcher is not None:
                cpu = psutil.Process(watcher.pid).cpu_times()
                out["watcher_cpu_s"] = round(cpu.user + cpu.system, 3)
            return out
        cpu_s = dashboard.cpu_s() - cpu_before
        ended = time.monotonic()
        seen = dashboard.successes() - before
        while seen < tasks and time.monotonic() - ended < timeout_s:
            time.sleep(0.05)
            seen = dashboard.successes() - before
        out.update(dashboard_cpu_s=round(cpu_s, 3),
                   dashboard_cpu_share_of_a_core=round(cpu_s / figures["duration_s"], 3),
                   success_states_seen=seen, tasks_run=tasks,
                   caught_up_after_s=round(time.monotonic() - ended, 3) if seen >= tasks
                   else None, stream_messages=dashboard.messages)
        return out
    finally:
        if dashboard is not None:
            dashboard.stop()
        if watcher is not None:
            watcher.stop()


def report(args: argparse.Namespace) -> dict[str, Any]:
    client = Client(args.timeout_s)
    passes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="zq-bench-dash-") as tmp:
        directory = Path(tmp)
        with make_cluster(directory / "zq", "ipc") as cluster:
            client.use(cluster.router)
            log(f"warm-up: a group of {min(args.tasks, 2000)}")
            client.group_throughput(min(args.tasks, 2000))
            kinds = ["none", "dashboard", "watch"] if args.watch_reference \
                else ["none", "dashboard"]
            order = (kinds + kinds[::-1]) * ((args.passes + 1) // 2)
            for index, kind in enumerate(order[:len(kinds) * args.passes]):
                log(f"pass {index + 1}: a group of {args.tasks}, {kind}")
                figures = one_pass(client, cluster, directory, args.tasks, kind,
                                   args.timeout_s)
                log(f"  {json.dumps(figures)}")
                passes.append(figures)
        client.close()
    without = [p["tasks_per_s"] for p in passes if p["kind"] == "none"]
    watched = [p["tasks_per_s"] for p in passes if p["kind"] == "watch"]
    with_ = [p["tasks_per_s"] for p in passes if p["dashboard"]]
    dashed = [p for p in passes if p["dashboard"]]
    summary = {
        "tasks_per_s_without": round(statistics.median(without), 1),
        "tasks_per_s_with": round(statistics.median(with_), 1),
        "with_over_without": round(statistics.median(with_) / statistics.median(without), 3),
        "states_missed": sum(p["tasks_run"] - p["success_states_seen"] for p in dashed),
        "dashboard_cpu_share_of_a_core_median": statistics.median(
            p["dashboard_cpu_share_of_a_core"] for p in dashed),
        "caught_up_after_s_max": max((p["caught_up_after_s"] or float("inf")) for p in dashed),
    }
    if watched:
        summary["tasks_per_s_bare_watcher"] = round(statistics.median(watched), 1)
        summary["bare_watcher_over_without"] = round(
            statistics.median(watched) / statistics.median(without), 3)
    return {"benchmark": "dashboard", "zq_revision": zq_revision(REPO_ROOT),
            "machine": machine_info(), "tasks": args.tasks, "passes": passes,
            "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=None, help="tasks per group (20,000)")
    parser.add_argument("--passes", type=int, default=None,
                        help="passes of each kind (3; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="groups of 2,000, 2 passes each")
    parser.add_argument("--watch-reference", action="store_true",
                        help="also passes with a bare watcher of every change (no dashboard)")
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    args.tasks = args.tasks or (2_000 if args.quick else 20_000)
    args.passes = args.passes or (2 if args.quick else 3)
    return run_report(report, args, lambda d: d["summary"]["states_missed"] == 0)


if __name__ == "__main__":
    sys.exit(main())
