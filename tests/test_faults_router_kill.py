"""The router SIGKILLed again and again under load from several clients, counted exactly.

Three client threads submit plain, ``acks_late`` and countdown tasks while the router is
killed three times (its whole process group, or its PID alone) and restarted on the same
data dir and address. Afterwards every accepted id must have its result, readable by a
fresh client, and every body must have run exactly once: a DONE that died with the router
is handed over again by its actor, a result the results actor had not stored is sent
again from the journal. A router kill interrupts no task's run (the actors live on), so
even ``acks_late`` tasks, at least once by definition, must run exactly once here.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.apps import faults
from tests.conftest import wait_until
from tests.test_faults import faults_cluster, run_counts
from zq import App, states
from zq.errors import PublishError

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

CLIENTS = 3
TASKS_PER_CLIENT = 600
KILLS = 3


class Client(threading.Thread):
    """Submits a mix of tasks as fast as the router takes them; keeps what was accepted."""

    def __init__(self, index: int, log: Path, router: str):
        super().__init__(daemon=True)
        self.app = App(f"client{index}", router=router, publish_timeout_s=30.0)
        self.log = str(log)
        self.accepted: dict[str, str] = {}  # id -> kind
        self.refused: list[str] = []
        self.random = random.Random(index)

    def run(self) -> None:
        try:
            for i in range(TASKS_PER_CLIENT):
                kind = self.random.choice(("plain", "plain", "late", "countdown"))
                try:
                    result = self._send(kind, i)
                except PublishError as exc:
                    self.refused.append(str(exc))
                    continue
                self.accepted[result.id] = kind
        finally:
            self.app.close()

    def _send(self, kind: str, i: int) -> Any:
        if kind == "late":
            return self.app.send_task("tests.apps.faults.nap_late", (self.log, 0.01))
        countdown = 0.5 if kind == "countdown" else None
        return self.app.send_task("tests.apps.faults.quick", (self.log, i),
                                  countdown=countdown)


def kill_router(cluster: Any, how: str) -> None:
    process = cluster.router_process
    if how == "group":
        process.kill_group(signal.SIGKILL)
    else:
        os.kill(process.pid, signal.SIGKILL)
    process.popen.wait(10)
    process.stop()


@pytest.mark.parametrize("how", ["group", "pid"])
def test_router_killed_three_times_under_load_loses_nothing_and_runs_nothing_twice(
        tmp_path, how):
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "cluster", concurrency=2,
                        workers_args=["--prefetch", "2"]) as cluster:
        clients = [Client(i, log, cluster.router) for i in range(CLIENTS)]
        for client in clients:
            client.start()
        for _ in range(KILLS):
            wait_until(lambda: log.exists() and len(log.read_text().splitlines()) > 50, 30,
                       "tasks to run")
            time.sleep(random.uniform(0.1, 0.6))
            kill_router(cluster, how)
            cluster.start_router()
        for client in clients:
            client.join(120)
            assert not client.is_alive(), "a client is still submitting"
        accepted = {i: kind for c in clients for i, kind in c.accepted.items()}
        refused = [r for c in clients for r in c.refused]

        checker = App("checker", router=cluster.router)
        try:
            missing = {}
            for task_id in accepted:
                result = checker.AsyncResult(task_id)
                try:
                    result.get(timeout=60)
                except Exception as exc:  # reported all together below
                    missing[task_id] = f"{type(exc).__name__}: {exc}"
            final = Counter(checker.AsyncResult(i).state for i in accepted)
        finally:
            checker.close()

    counts = run_counts(log)
    never_ran = [i for i in accepted if counts[i] == 0]
    twice = {i: counts[i] for i in accepted if counts[i] > 1}
    twice_plain = {i: n for i, n in twice.items() if accepted[i] != "late"}
    twice_late = {i: n for i, n in twice.items() if accepted[i] == "late"}
    report = (f"accepted {len(accepted)}, refused {len(refused)}, never ran "
              f"{len(never_ran)}, without a result {len(missing)}, early-ack run twice "
              f"{len(twice_plain)}, acks_late run twice {len(twice_late)}, final {final}")
    print(report)
    assert not missing, f"{report}; e.g. {list(missing.items())[:3]}"
    assert not never_ran, report
    assert not twice_plain, report
    assert not twice_late, report
    assert final == Counter({states.SUCCESS: len(accepted)}), report
    assert not refused, report
