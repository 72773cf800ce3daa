"""A long task among short ones: do the short ones wait for it? Print one JSON document.

    python bench/mixed.py            # about 20 s: 3 rounds
    python bench/mixed.py --quick    # 1 round

One router and ``zq workers -n 2``. Each round warms the short task's name (so the router
knows it is short and stacks it), then sends one 2 s task and 200 short ones right behind
it from one client, and records when each ended. With ``-Ofair`` kept, the long task goes
to one actor with nothing stacked behind it, and the other actor runs every short task:
all 200 end long before the long one does. Also reported: how many short tasks the router
handed out stacked (granted), and the short tasks' throughput meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

from zq.testing import Cluster  # noqa: E402

from _common import BenchError, log, machine_info, run_report, zq_revision  # noqa: E402


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rounds = 1 if args.quick else args.rounds
    from mixed_tasks import app, long_task, short_task

    out = []
    with tempfile.TemporaryDirectory(prefix="zq-bench-mixed-") as tmp, \
            Cluster(Path(tmp), app="mixed_tasks", concurrency=2,
                    env={"PYTHONPATH": f"{BENCH_DIR}:{BENCH_DIR.parent}"},
                    cwd=BENCH_DIR) as cluster:
        app.conf.update(router=cluster.router)
        try:
            for result in [short_task.delay(i) for i in range(50)]:
                result.get(timeout=30)
            for round_ in range(rounds):
                log(f"round {round_ + 1}/{rounds}: one {args.long_s:g} s task and "
                    f"{args.short} short ones")
                granted_before = (cluster.stats() or {}).get("granted", 0)
                sent_at = time.time()
                long = long_task.delay(args.long_s)
                short = [short_task.delay(i) for i in range(args.short)]
                ended = [result.get(timeout=60) for result in short]
                long_ended = long.get(timeout=60)
                granted = (cluster.stats() or {}).get("granted", 0) - granted_before
                last_short = max(ended)
                if last_short >= long_ended:
                    raise BenchError(f"round {round_ + 1}: the last short task ended "
                                     f"{last_short - long_ended:.3f}s after the long one")
                out.append({
                    "last_short_ended_after_send_ms": round((last_short - sent_at) * 1000, 1),
                    "long_ended_after_send_ms": round((long_ended - sent_at) * 1000, 1),
                    "short_before_long": sum(1 for t in ended if t < long_ended),
                    "short_tasks_per_s": round(args.short / (last_short - sent_at), 1),
                    "granted": granted,
                })
        finally:
            app.close()
    return {"benchmark": "mixed", "revision": zq_revision(BENCH_DIR.parent),
            "machine": machine_info(), "long_s": args.long_s, "short": args.short,
            "rounds": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short", type=int, default=200)
    parser.add_argument("--long-s", type=float, default=2.0)
    return run_report(measure, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
