"""Tasks only go where they can run (issue 12): actors announce the task names they have,
and the router hands a task only to an actor that has it. Two apps whose workers share
the default queue each run only their own tasks; a task no connected worker has waits,
parked and counted in the router's stats, and runs once a worker that has it connects;
its sender is told so."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from tests.apps import basic, faults
from tests.conftest import connect
from tests.test_faults import runs, spawned_children
from zq.testing import Cluster

pytestmark = pytest.mark.timeout(90)


def test_two_apps_on_one_queue_each_run_their_own_tasks_and_an_unknown_one_waits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    log = tmp_path / "runs.log"
    with Cluster(tmp_path / "c", app="tests.apps.basic", concurrency=2) as cluster:
        connect(basic.app, cluster)
        connect(faults.app, cluster)
        try:
            with caplog.at_level(logging.WARNING, logger="zq.client"):
                waiting = faults.quick.delay(str(log), "first")
                # The basic app's tasks are not held up behind it.
                assert [basic.add.delay(i, i).get(timeout=10) for i in range(20)] == [
                    2 * i for i in range(20)]
                # Read with the router's confirmation (a client reads its answers when
                # it next talks to the router).
                waiting.accepted(10)
            assert "has task 'tests.apps.faults.quick'" in caplog.text
            stats = cluster.stats()
            assert stats is not None
            assert stats["parked"] == {"celery": {"tests.apps.faults.quick": 1}}
            assert not waiting.ready()

            cluster.app = "tests.apps.faults"
            workers = cluster.start_workers(concurrency=1)
            assert waiting.get(timeout=20) == "first"
            faults_pids = spawned_children(workers.pid)

            sent_faults = [faults.quick.delay(str(log), i) for i in range(40)]
            sent_basic = [basic.add.delay(i, 1) for i in range(40)]
            assert [r.get(timeout=30) for r in sent_faults] == list(range(40))
            assert [r.get(timeout=30) for r in sent_basic] == [i + 1 for i in range(40)]
            stats = cluster.stats()
            assert stats is not None and stats["parked"] == {}
        finally:
            basic.app.close()
            faults.app.close()
    ran = runs(log)
    assert Counter(run.task_id for run in ran) == Counter(
        [waiting.id] + [r.id for r in sent_faults])
    assert {run.pid for run in ran} <= faults_pids


def test_every_process_says_what_it_is_in_ps(tmp_path: Path):
    """With setproctitle installed (the `proctitle` extra, part of `test`), `ps` shows
    each process's role instead of `python -c from multiprocessing.spawn ...`."""
    pytest.importorskip("setproctitle")
    import psutil

    with Cluster(tmp_path / "c", app="tests.apps.basic", concurrency=2) as cluster:
        assert cluster.router_process is not None
        router = psutil.Process(cluster.router_process.pid)
        supervisor = psutil.Process(cluster.workers[0].pid)
        titles = [" ".join(router.cmdline())]
        titles += [" ".join(p.cmdline()) for p in router.children()]
        titles += [" ".join(supervisor.cmdline())]
        titles += [" ".join(p.cmdline()) for p in supervisor.children()
                   if "resource_tracker" not in " ".join(p.cmdline())]
    assert titles[0].startswith("zq router ")
    assert any(t.startswith("zq results (router pid ") for t in titles)
    assert any(t.startswith("zq workers tests.apps.basic (supervisor of 2)") for t in titles)
    assert sum(t.startswith("zq actor ") for t in titles) == 2, titles
