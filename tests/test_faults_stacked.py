"""Short tasks stacked on actors (zq/router/pace.py), under real processes and real signals.

Behind a task known to be short the router stacks more on an actor, and the actor starts
those before the router has confirmed the DONEs before them. These tests check what that
must not change: a long task never holds back short ones that an idle actor could run
(``-Ofair``), and actors killed at random while they work through stacked tasks from
several clients never run an early-ack task twice, never fail a task that never started,
and lose nothing.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import zq
from tests.apps import faults
from tests.conftest import wait_until
from tests.test_faults import faults_cluster, runs, spawned_children
from zq import states

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def test_a_long_task_never_holds_back_short_ones(tmp_path: Path):
    """Two actors, one 2 s task and 200 short ones sent right behind it: every short one
    ends before the long one does, and the short ones were stacked (granted)."""
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "c", concurrency=2) as cluster:
        long = faults.nap.delay(str(log), 2.0, "long")
        short = [faults.stamp.delay(str(log)) for _ in range(200)]
        ended = [result.get(timeout=30) for result in short]
        assert not long.ready(), "the long task ended before the short ones"
        assert long.get(timeout=30) == "long"
        finished_long = long.date_done.timestamp()
        assert max(ended) < finished_long
        stats = cluster.stats()
        assert stats is not None and stats["granted"] > 0, "no task was stacked"
    assert Counter(run.task_id for run in runs(log)) == Counter(
        [long.id] + [result.id for result in short])


def test_a_long_task_in_the_middle_of_a_stream_waits_for_an_idle_actor(tmp_path: Path):
    """Short tasks before and after a long one, all from one client: the long one is
    never stacked behind short ones, and the short ones after it do not wait for it."""
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "c", concurrency=2):
        warm = [faults.stamp.delay(str(log)) for _ in range(50)]
        for result in warm:
            result.get(timeout=30)
        before = [faults.stamp.delay(str(log)) for _ in range(100)]
        long = faults.nap.delay(str(log), 2.0, "long")
        after = [faults.stamp.delay(str(log)) for _ in range(200)]
        ended = [result.get(timeout=30) for result in before + after]
        assert not long.ready()
        long.get(timeout=30)
        assert max(ended) < long.date_done.timestamp()


def _kill_actors(cluster, stop: threading.Event, kills: list[int], pause_s: tuple[float, float],
                 limit: int) -> None:
    supervisor = cluster.workers[0].pid
    rng = random.Random(7)
    while not stop.is_set() and len(kills) < limit:
        time.sleep(rng.uniform(*pause_s))
        pids = sorted(spawned_children(supervisor))
        if not pids:
            continue
        victim = rng.choice(pids)
        try:
            os.kill(victim, signal.SIGKILL)
            kills.append(victim)
        except ProcessLookupError:
            pass


def test_actors_killed_at_random_under_stacked_load_from_several_clients(tmp_path: Path):
    """Two clients send 2,000 short early-ack tasks while actors are SIGKILLed by PID at
    random moments (mostly between tasks, where DONEs are on their way and stacked tasks
    start without waiting). Every id is counted: each ran at most once; one that ended
    SUCCESS ran once; one that failed did so with WorkerLostError; none is left
    unfinished. A kill fails the task it interrupts and those whose DONEs died with the
    process (sent, still in its socket's queue: they ran, once), never a task stacked
    behind: so of the failed tasks whose body never wrote its line, there are no more
    than actors killed."""
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "c", concurrency=3) as cluster:
        for result in [faults.nap.delay(str(log), 0.0005) for _ in range(30)]:
            result.get(timeout=30)  # its name is known short from here on
        sent: list[list[zq.AsyncResult]] = [[] for _ in range(2)]
        stop, kills = threading.Event(), []

        def client(index: int) -> None:
            for _ in range(1000):
                sent[index].append(faults.nap.delay(str(log), 0.0005, index))

        killer = threading.Thread(target=_kill_actors, args=(cluster, stop, kills,
                                                             (0.05, 0.2), 15))
        killer.start()
        clients = [threading.Thread(target=client, args=(i,)) for i in range(2)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
        results = [result for batch in sent for result in batch]
        for result in results:
            try:
                result.get(timeout=60)
            except zq.WorkerLostError:
                pass
        stop.set()
        killer.join(10)
        stats = cluster.stats()
        assert stats is not None and stats["granted"] > 500, stats
        counts = Counter(run.task_id for run in runs(log))
        problems = []
        failed = failed_unrun = 0
        for result in results:
            state, ran = result.state, counts[result.id]
            if ran > 1:
                problems.append(f"{result.id} ran {ran} times")
            elif state == states.SUCCESS and ran != 1:
                problems.append(f"{result.id} SUCCESS but ran {ran} times")
            elif state == states.FAILURE:
                failed += 1
                # Its body may have been killed before it wrote its line.
                failed_unrun += ran == 0
                if not isinstance(result.result, zq.WorkerLostError):
                    problems.append(f"{result.id} {result.result!r} after {ran} runs")
            elif state not in (states.SUCCESS, states.FAILURE):
                problems.append(f"{result.id} left {state}")
        print(f"\n{len(kills)} actors killed; {len(results)} tasks; {failed} failed with "
              f"WorkerLostError ({failed_unrun} before their body's first line); "
              f"{stats['granted']} handed out stacked")
        assert len(kills) >= 10, "the load ended before enough kills"
        assert failed_unrun <= len(kills), "tasks that never ran failed: more than one a kill"
        assert not problems, "\n".join(problems[:30])
