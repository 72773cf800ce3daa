"""How soon a chord's body starts after its last header task ends; print one JSON document.

    python bench/chord.py            # about 30 s: 5 chords of 1,000 header tasks
    python bench/chord.py --quick    # a smoke run: 2 chords of 200
    python bench/chord.py --chords 10 --parts 2000

One router and ``zq workers -n 2``. Each round sends ``chord([ended.s(i) for i in
range(parts)], lag.s())``: every header task returns the time it ended, and the body the
time it started minus the latest of those (one machine, one clock). Side by side, in the
same rounds, the same work done the way a client without chords would: a group, waited
for with ``get()``, then the body sent with its results (``client_side``). Celery's
reference needs no run: with most result backends its chord body is sent by a
``chord_unlock`` task that polls the header every second (``countdown=1``), so its body
starts up to a second after the last header task, half a second on average.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import zq  # noqa: E402
from zq.testing import Cluster  # noqa: E402

from _common import BenchError, log, machine_info, run_report, zq_revision  # noqa: E402


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered) * 1000, 2),
            "max": round(ordered[-1] * 1000, 2), "min": round(ordered[0] * 1000, 2)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    chords = 2 if args.quick else args.chords
    parts = 200 if args.quick else args.parts
    from chord_tasks import app, ended, lag

    with tempfile.TemporaryDirectory(prefix="zq-bench-chord-") as tmp, \
            Cluster(Path(tmp), app="chord_tasks", concurrency=2,
                    env={"PYTHONPATH": f"{BENCH_DIR}:{BENCH_DIR.parent}"},
                    cwd=BENCH_DIR) as cluster:
        app.conf.update(router=cluster.router)
        try:
            lags, client_lags, chord_s, client_s = [], [], [], []
            for round_ in range(chords):
                log(f"round {round_ + 1}/{chords}: chord of {parts}")
                start = time.perf_counter()
                value = zq.chord([ended.s(i) for i in range(parts)], lag.s()).delay().get(
                    timeout=120)
                chord_s.append(time.perf_counter() - start)
                if value["parts"] != parts or not value["in_order"]:
                    raise BenchError(f"the chord's body got {value!r}")
                lags.append(value["lag_s"])
                log(f"round {round_ + 1}/{chords}: group, get(), then the body")
                start = time.perf_counter()
                results = zq.group(ended.s(i) for i in range(parts)).delay().get(timeout=120)
                value = lag.delay(results).get(timeout=60)
                client_s.append(time.perf_counter() - start)
                client_lags.append(value["lag_s"])
        finally:
            app.close()
    return {
        "benchmark": "chord", "revision": zq_revision(BENCH_DIR.parent),
        "machine": machine_info(), "chords": chords, "parts": parts,
        "body_start_after_last_header_ms": {"zq_chord": _ms(lags),
                                            "client_side": _ms(client_lags),
                                            "celery_chord_unlock": {"interval": 1000.0}},
        "chord_total_s": {"zq_chord": round(statistics.median(chord_s), 3),
                          "client_side": round(statistics.median(client_s), 3)},
        "header_tasks_per_s": round(parts / statistics.median(chord_s), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--chords", type=int, default=5)
    parser.add_argument("--parts", type=int, default=1000)
    return run_report(measure, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
