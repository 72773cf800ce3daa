"""Tasks sent without waiting for each answer (the default): what the router confirmed is
never lost, and what it did not is never dropped in silence while the client lives.

A router SIGKILLed during a pipelined burst from several clients: every task each client
sent ends with its result, and runs once (the client sends again what was not confirmed;
the router drops an id it holds). A client SIGKILLed with unconfirmed tasks: every task
the router had confirmed runs once; the others run once or never, never twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.apps import faults
from tests.conftest import wait_until
from tests.test_faults import faults_cluster, run_counts, spawned_children
from tests.test_faults_router_kill import kill_router
from zq import App

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("how", ["group", "pid"])
def test_router_killed_during_a_pipelined_burst_loses_nothing(tmp_path, how):
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "cluster", concurrency=2) as cluster:
        sent: list[list[str]] = [[], [], []]
        errors: list[str] = []

        def client(index: int) -> None:
            app = App(f"burst{index}", router=cluster.router, publish_timeout_s=30.0)
            try:
                for i in range(1000):
                    result = app.send_task("tests.apps.faults.quick", (str(log), i))
                    sent[index].append(result.id)
                app.flush(60)
            except Exception as exc:  # reported below
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                app.close()

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) > 200, 30,
                   "tasks to run")
        kill_router(cluster, how)
        time.sleep(0.5)
        cluster.start_router()
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive()
        assert errors == []
        checker = App("checker", router=cluster.router)
        try:
            ids = [i for per_client in sent for i in per_client]
            missing = []
            for task_id in ids:
                try:
                    checker.AsyncResult(task_id).get(timeout=60)
                except Exception as exc:
                    missing.append((task_id, repr(exc)))
        finally:
            checker.close()
    counts = run_counts(log)
    assert len(ids) == 3000 and missing == []
    assert [i for i in ids if counts[i] != 1] == []


def test_client_killed_with_unconfirmed_tasks(tmp_path):
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "cluster", concurrency=2) as cluster:
        out = tmp_path / "client.out"
        with open(out, "w") as stdout:
            client = subprocess.Popen(
                [sys.executable, "-m", "tests.apps.pipelined_client", cluster.router,
                 str(log), "100000"], cwd=REPO, stdout=stdout, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: out.read_text().count("confirmed ") >= 500, 60,
                       "500 confirmed tasks")
            client.send_signal(signal.SIGKILL)
            client.wait(10)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(10)
        lines = out.read_text().splitlines()
        sent = [line.split()[1] for line in lines if line.startswith("sent ")]
        confirmed = {line.split()[1] for line in lines if line.startswith("confirmed ")}
        assert confirmed and set(confirmed) <= set(sent)
        # What the router confirmed has its result.
        values = {task_id: faults.app.AsyncResult(task_id).get(timeout=60)
                  for task_id in confirmed}
        marker = faults.quick.delay(str(log), "marker")
        assert marker.get(timeout=30) == "marker"
    counts = run_counts(log)
    assert len(values) == len(confirmed)
    assert [i for i in confirmed if counts[i] != 1] == []
    assert [i for i in sent if counts[i] > 1] == []


def test_a_thread_that_sends_and_ends_at_once_loses_nothing(tmp_path):
    """A thread sends tasks without waiting and returns while the router is paused
    (nothing confirmed yet): its sockets go with its thread-local data, and what they
    hold unconfirmed is waited for (sent again) first, not dropped."""
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "cluster", concurrency=2) as cluster:
        app = App("short-lived", router=cluster.router, publish_timeout_s=30.0)
        app.send_task("tests.apps.faults.quick", (str(log), "warm")).get(timeout=10)
        sent: list[str] = []
        connected, paused = threading.Event(), threading.Event()

        def sender() -> None:
            # Connected (and the handshake done) before the router is paused.
            app.send_task("tests.apps.faults.quick", (str(log), "first")).get(timeout=10)
            connected.set()
            paused.wait(10)
            for i in range(20):
                sent.append(app.send_task("tests.apps.faults.quick", (str(log), i)).id)

        thread = threading.Thread(target=sender)
        thread.start()
        assert connected.wait(20)
        router = cluster.router_process.popen
        router.send_signal(signal.SIGSTOP)
        try:
            paused.set()
            time.sleep(1.0)
            # Returned, and still in its thread-end flush: nothing is confirmed yet.
            assert thread.is_alive() and len(sent) == 20
        finally:
            router.send_signal(signal.SIGCONT)
        thread.join(30)
        assert not thread.is_alive()
        try:
            values = [app.AsyncResult(task_id).get(timeout=30) for task_id in sent]
        finally:
            app.close()
    assert values == list(range(20))
    counts = run_counts(log)
    assert [counts[task_id] for task_id in sent] == [1] * 20


def test_results_come_from_the_router_while_the_results_actor_is_paused(tmp_path):
    """The short way: with the results actor stopped (SIGSTOP), get() still returns each
    result, sent by the router the moment the task ends; once the results actor runs
    again it stores every one of them."""
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "cluster", concurrency=2) as cluster:
        faults.quick.delay(str(log), "warm").get(timeout=10)
        results_actor = spawned_children(cluster.router_process.pid)
        assert len(results_actor) == 1
        (pid,) = results_actor
        os.kill(pid, signal.SIGSTOP)
        try:
            sent = [faults.quick.delay(str(log), i) for i in range(50)]
            values = [result.get(timeout=10) for result in sent]
            one_by_one = [faults.quick.delay(str(log), i).get(timeout=10) for i in range(20)]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert values == list(range(50)) and one_by_one == list(range(20))
        checker = App("checker", router=cluster.router)
        try:
            wait_until(lambda: all(checker.AsyncResult(r.id).state == "SUCCESS"
                                   for r in sent), 10, "the results stored")
        finally:
            checker.close()
