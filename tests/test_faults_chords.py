"""Chords under faults: the router SIGKILLed while headers run, an actor SIGKILLed while
it runs a header task. Counted exactly: every header task's runs, the body's runs (once,
or never when the chord failed), and the chord's outcome; never a hang."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

import zq
from tests.apps import faults
from tests.conftest import wait_until
from tests.test_faults import faults_cluster, run_counts, wait_for_run
from tests.test_faults_router_kill import kill_router
from zq import App, chord, states

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(180)]

CHORDS = 6
PARTS = 30


def send_chords(log: Path, late: bool, count: int) -> list[tuple[str, list[str]]]:
    """``count`` chords of PARTS napping tasks; returns (body id, header ids) each."""
    sent = []
    for c in range(count):
        header = [faults.nap_late.s(str(log), 0.02) if late
                  else faults.nap.s(str(log), 0.02, c * 1000 + i) for i in range(PARTS)]
        result = chord(header, faults.gather.s(str(log))).apply_async()
        sent.append((result.id, [r.id for r in result.parent.results]))
    return sent


@pytest.mark.parametrize("how,late", [("group", False), ("pid", True)])
def test_router_killed_while_chord_headers_run_fires_each_body_once(tmp_path, how, late):
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "cluster", concurrency=2,
                        workers_args=["--prefetch", "2"]) as cluster:
        faults.app.conf.update(publish_timeout_s=30.0)
        try:
            sent = send_chords(log, late, CHORDS)
            for _ in range(2):
                wait_until(lambda: log.exists() and len(log.read_text().splitlines()) > 20,
                           30, "header tasks to run")
                time.sleep(random.uniform(0.05, 0.3))
                kill_router(cluster, how)
                cluster.start_router()
            checker = App("checker", router=cluster.router)
            try:
                values = {body: checker.AsyncResult(body).get(timeout=60)
                          for body, _ in sent}
            finally:
                checker.close()
        finally:
            faults.app.conf.update(publish_timeout_s=10.0)
    counts = run_counts(log)
    for c, (body, parts) in enumerate(sent):
        expected = [0.02] * PARTS if late else [c * 1000 + i for i in range(PARTS)]
        assert values[body] == expected
        assert counts[body] == 1, f"body {body} ran {counts[body]} times"
        assert [counts[p] for p in parts] == [1] * PARTS


def test_actor_killed_running_a_header_task(tmp_path):
    """Early ack: the header task fails with WorkerLostError and the chord with it, naming
    the task; acks_late: it is redelivered and the chord completes. The body runs once,
    or never."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    with faults_cluster(tmp_path / "cluster", concurrency=2) as cluster:
        try:
            body = faults.gather.s(str(log))
            early = chord([faults.hold.s(str(log), str(gate)), faults.quick.s(str(log), 1)],
                          body).apply_async()
            held = early.parent.results[0]
            os.kill(wait_for_run(log, held.id).pid, signal.SIGKILL)
            with pytest.raises(zq.ChordError, match=f"Dependency {held.id} raised .*"
                                                    f"WorkerLostError"):
                early.get(timeout=20)
            assert early.state == states.FAILURE

            # A chain in the header whose first link the router fails (its actor lost):
            # the chord fails too, although the chain's last link never ran.
            chained = chord([faults.hold.s(str(log), str(gate)) | faults.quick.si(str(log), 3),
                             faults.quick.s(str(log), 4)], body).apply_async()
            first_link = chained.parent.results[0].parent
            os.kill(wait_for_run(log, first_link.id).pid, signal.SIGKILL)
            with pytest.raises(zq.ChordError, match=f"Dependency {first_link.id} raised"):
                chained.get(timeout=20)

            late = chord([faults.hold_late.s(str(log), str(gate)),
                          faults.quick.s(str(log), 2)], body).apply_async()
            held_late = late.parent.results[0]
            os.kill(wait_for_run(log, held_late.id).pid, signal.SIGKILL)
            wait_for_run(log, held_late.id, count=2, timeout_s=20)
            gate.touch()
            assert late.get(timeout=20) == ["released", 2]
        finally:
            gate.touch()
    counts = run_counts(log)
    assert counts[early.id] == 0 and counts[held.id] == 1
    assert counts[chained.id] == 0 and counts[first_link.id] == 1
    assert counts[late.id] == 1 and counts[held_late.id] == 2


def test_many_clients_sending_chords_while_the_router_is_killed(tmp_path):
    """Three clients send chords while the router is killed: each chord the router
    accepted whole fires once; a chord whose sending failed is reported to its sender."""
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "cluster", concurrency=2) as cluster:
        sent: list[list[tuple[str, list[str]]]] = [[] for _ in range(3)]
        errors: list[str] = []

        def client(index: int) -> None:
            try:
                for _ in range(4):
                    try:
                        sent[index].extend(send_chords(log, False, 1))
                    except zq.PublishError as exc:
                        errors.append(str(exc))
            finally:
                faults.app.close()

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) > 30, 30,
                   "header tasks to run")
        kill_router(cluster, "group")
        cluster.start_router()
        for thread in threads:
            thread.join(90)
            assert not thread.is_alive()
        checker = App("checker", router=cluster.router)
        try:
            chords = [c for per_client in sent for c in per_client]
            values = {body: checker.AsyncResult(body).get(timeout=60) for body, _ in chords}
        finally:
            checker.close()
    counts = run_counts(log)
    assert len(chords) + len(errors) == 12
    for body, parts in chords:
        assert len(values[body]) == PARTS
        assert counts[body] == 1
        assert all(counts[p] == 1 for p in parts)
