"""Fault injection (issue 4, "Nothing accepted is ever lost"; docs/guarantees.md).

Each test starts real ``zq router`` and ``zq workers`` processes, kills or attacks them with
real signals, and then checks that every accepted task reached its end state and that
nothing ran twice that should not have. Tasks (``tests.apps.faults``) append one line per
run to a log file under ``tmp_path``: the test finds the process to kill there and counts
the runs of each task id.

Where a test must show that something did *not* run, it sends a marker task to a cluster
with one actor after it: the queue is FIFO, so once the marker has run, anything that could
have run before it has.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest
import zmq
import zmq.auth

import zq
import zq.results_client
from tests.apps import faults
from tests.conftest import dedicated_cluster, wait_until
from zq import App, group, protocol, states
from zq.security import client_keys
from zq.testing import Cluster, Process, is_spawned_child

pytestmark = pytest.mark.faults

FAULTS_APP = "tests.apps.faults"
app = faults.app


# -- what the tasks recorded -------------------------------------------------------------


class Run(NamedTuple):
    task_id: str
    pid: int
    redelivered: bool


def runs(log: Path) -> list[Run]:
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        task_id, pid, redelivered = line.split()
        found.append(Run(task_id, int(pid), redelivered == "1"))
    return found


def run_counts(log: Path) -> Counter[str]:
    return Counter(run.task_id for run in runs(log))


def runs_of(log: Path, task_id: str) -> list[Run]:
    return [run for run in runs(log) if run.task_id == task_id]


def wait_for_run(log: Path, task_id: str, count: int = 1, timeout_s: float = 10.0) -> Run:
    """The ``count``-th run of ``task_id``, once it has started."""
    found = wait_until(lambda: len(runs_of(log, task_id)) >= count and runs_of(log, task_id),
                       timeout_s, f"run {count} of task {task_id}")
    return found[count - 1]


def ended(log: Path) -> Path:
    """Where the ``hold`` tasks record that they returned."""
    return log.with_name(log.name + ".ended")


def after_everything_queued(log: Path) -> None:
    """Run a marker task and wait for it: on a one-actor cluster, whatever was queued
    before it has run by then (or never will)."""
    marker = faults.quick.delay(str(log), "marker")
    assert marker.get(timeout=15) == "marker"


# -- processes ---------------------------------------------------------------------------


@contextmanager
def faults_cluster(directory: Path, workers_args: Sequence[str] = (),
                   **options: Any) -> Iterator[Cluster]:
    """A cluster of the fault tasks. Its hosts stop a task still running 2 s after they
    are told to stop, so that a test failing with a task held does not wait it out."""
    with dedicated_cluster(directory, app=app, module=FAULTS_APP,
                           workers_args=["--shutdown-timeout", "2", *workers_args],
                           **options) as started:
        yield started


def spawned_children(pid: int) -> set[int]:
    """The live multiprocessing children (spawn start method) of ``pid``."""
    found = set()
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return found
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and is_spawned_child(" ".join(
                    child.cmdline())):
                found.add(child.pid)
        except psutil.Error:
            pass
    return found


def results_actor_pid(cluster: Cluster) -> int:
    assert cluster.router_process is not None
    pids = wait_until(lambda: spawned_children(cluster.router_process.pid), 10,
                      "the results actor process")
    assert len(pids) == 1
    return pids.pop()


def kill_router(cluster: Cluster) -> None:
    """SIGKILL the router and its results actor, as a crash would, and leave them down."""
    assert cluster.router_process is not None
    cluster.router_process.kill_group(signal.SIGKILL)
    cluster.router_process.popen.wait(10)
    cluster.router_process.stop()


def exit_code(process: Process, timeout_s: float) -> int | None:
    """How ``process`` exited, or None when it still runs after ``timeout_s``."""
    try:
        return process.popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None


class Background:
    """Call ``fn`` in a thread (with its own client sockets); keep its value or error."""

    def __init__(self, fn: Callable[[], Any]):
        self.value: Any = None
        self.error: BaseException | None = None
        self._fn = fn
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread by result()
            self.error = exc
        finally:
            app.close()

    def running(self) -> bool:
        return self._thread.is_alive()

    def inside(self, function: str) -> bool:
        """Whether the thread is now running ``function`` (a name on its call stack)."""
        frame = sys._current_frames().get(self._thread.ident or 0)
        while frame is not None:
            if frame.f_code.co_name == function:
                return True
            frame = frame.f_back
        return False

    def wait_until_blocked_in_get(self) -> None:
        """Until the thread has asked the results actor for the result and waits for it
        to be pushed (``ResultsClient.wait`` sends WAIT, then pumps the socket)."""
        wait_until(lambda: self.inside("_pump") and self.inside("wait"), 10,
                   "the thread to wait for its result")

    def result(self, timeout_s: float) -> Any:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"still blocked after {timeout_s}s"
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "runs.log"


def settled(cluster: Cluster, actors: int) -> Cluster:
    """``cluster`` once it has ``actors`` actors and holds no task (an earlier test's
    killed actor replaced, its tasks finished)."""
    cluster.wait_for(lambda s: s["actors"] == actors and s["tasks"] == 0,
                     f"{actors} actors and no task left", timeout_s=15)
    return cluster


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with faults_cluster(tmp_path_factory.mktemp("pair"), concurrency=2) as cluster:
        yield cluster


@pytest.fixture
def two_actors(pair: Cluster) -> Cluster:
    """One host with two actors, shared by the tests that kill one actor at a time."""
    return settled(pair, 2)


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with faults_cluster(tmp_path_factory.mktemp("solo"), concurrency=1) as cluster:
        yield cluster


@pytest.fixture
def one_actor(solo: Cluster) -> Cluster:
    """One host with one actor (so one FIFO queue), shared by tests that kill nothing."""
    return settled(solo, 1)


# -- an actor process killed -------------------------------------------------------------


def test_early_ack_task_whose_actor_is_killed_fails_with_worker_lost_error(two_actors, log,
                                                                          gate):
    result = faults.hold.delay(str(log), str(gate))
    victim = wait_for_run(log, result.id).pid
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(zq.WorkerLostError, match="exited prematurely"):
        result.get(timeout=10)
    assert time.monotonic() - killed_at < 2.0
    assert result.state == states.FAILURE
    gate.touch()
    wait_until(lambda: two_actors.actor_count() == 2, 10, "a replacement actor")
    assert faults.quick.delay(str(log), 1).get(timeout=10) == 1
    assert run_counts(log)[result.id] == 1


def test_acks_late_task_whose_actor_is_killed_is_redelivered_and_succeeds(two_actors, log,
                                                                         gate):
    result = faults.hold_late.delay(str(log), str(gate))
    first = wait_for_run(log, result.id)
    os.kill(first.pid, signal.SIGKILL)
    gate.touch()
    assert result.get(timeout=10) == "released"
    assert result.state == states.SUCCESS
    attempts = runs_of(log, result.id)
    assert [a.redelivered for a in attempts] == [False, True]
    assert attempts[1].pid != first.pid


def test_acks_late_task_without_reject_on_worker_lost_fails_with_worker_lost_error(
        two_actors, log, gate):
    result = faults.hold_late_unrejected.delay(str(log), str(gate))
    os.kill(wait_for_run(log, result.id).pid, signal.SIGKILL)
    with pytest.raises(zq.WorkerLostError):
        result.get(timeout=10)
    gate.touch()
    assert faults.quick.delay(str(log), 1).get(timeout=10) == 1
    assert run_counts(log)[result.id] == 1


@pytest.mark.parametrize(("task", "max_redeliveries"), [
    (faults.poison, 3), (faults.poison_redelivered_once, 1)])
def test_poison_task_runs_at_most_one_plus_max_redeliveries_times_then_fails(
        two_actors, log, task, max_redeliveries):
    result = task.delay(str(log))
    with pytest.raises(zq.WorkerLostError,
                       match=f"redelivered {max_redeliveries} times "
                             f"\\(max_redeliveries={max_redeliveries}\\)"):
        result.get(timeout=20)
    attempts = runs_of(log, result.id)
    assert len(attempts) == 1 + max_redeliveries
    assert [a.redelivered for a in attempts] == [False] + [True] * max_redeliveries
    assert len({a.pid for a in attempts}) == len(attempts)
    wait_until(lambda: two_actors.actor_count() == 2, 15, "replacement actors")
    assert group(faults.quick.s(str(log), i) for i in range(4)).apply_async().get(
        timeout=10) == [0, 1, 2, 3]
    assert run_counts(log)[result.id] == 1 + max_redeliveries


def test_prefetched_tasks_of_a_killed_actor_are_requeued_and_run_once(tmp_path, log, gate):
    with faults_cluster(tmp_path / "cluster", concurrency=1,
                        workers_args=["--prefetch", "3"]) as cluster:
        busy = faults.hold.delay(str(log), str(gate))
        victim = wait_for_run(log, busy.id).pid
        prefetched = [faults.quick.delay(str(log), i) for i in range(2)]
        wait_until(lambda: cluster.stats()["inflight"] == 3, 5,
                   "two tasks prefetched behind the busy one")
        queued = [faults.quick.delay(str(log), i) for i in range(2, 6)]
        cluster.start_workers(concurrency=1)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(zq.WorkerLostError):
            busy.get(timeout=10)
        assert [r.get(timeout=10) for r in prefetched + queued] == list(range(6))
    counts = run_counts(log)
    assert [counts[r.id] for r in prefetched + queued] == [1] * 6
    assert counts[busy.id] == 1


def test_revoked_prefetched_task_of_a_killed_actor_is_not_requeued(tmp_path, log, gate):
    """The busy actor never reads the revoke; its tasks come back to the router when it is
    killed, and the revoked one must not go back to a queue."""
    with faults_cluster(tmp_path / "cluster", concurrency=1,
                        workers_args=["--prefetch", "2"]) as cluster:
        busy = faults.hold.delay(str(log), str(gate))
        victim = wait_for_run(log, busy.id).pid
        prefetched = faults.quick.delay(str(log), "prefetched")
        wait_until(lambda: cluster.stats()["inflight"] == 2, 5, "a task prefetched")
        prefetched.revoke()
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(zq.TaskRevokedError):
            prefetched.get(timeout=10)
        after_everything_queued(log)
        assert run_counts(log)[prefetched.id] == 0
        cluster.wait_for(lambda s: s["tasks"] == 0, "nothing left")


def test_prefetched_task_handed_out_again_after_a_router_restart_runs_once(tmp_path, log,
                                                                          gate):
    """A busy actor holds a prefetched task across a router restart; the new router hands
    that task to another actor (the busy one cannot say it holds it); when the busy one
    announces itself at last, it is told to drop it."""
    with faults_cluster(tmp_path / "cluster", concurrency=1,
                        workers_args=["--prefetch", "2"]) as cluster:
        busy = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, busy.id)
        prefetched = faults.quick.delay(str(log), "prefetched")
        wait_until(lambda: cluster.stats()["inflight"] == 2, 5, "a task prefetched")
        cluster.restart_router()
        cluster.start_workers(concurrency=1)
        assert prefetched.get(timeout=15) == "prefetched"
        gate.touch()
        assert busy.get(timeout=15) == "released"
        wait_until(lambda: cluster.actor_count() == 2, 10, "the busy actor to announce itself")
        for _ in range(2):  # through both actors: the dropped task would have run by then
            assert faults.quick.delay(str(log), "marker").get(timeout=10) == "marker"
        cluster.wait_for(lambda s: s["tasks"] == 0, "nothing left")
    assert run_counts(log)[prefetched.id] == 1


# -- a whole worker host lost -------------------------------------------------------------


@contextmanager
def host_to_lose(tmp_path: Path) -> Iterator[tuple[Cluster, Process]]:
    """A router that gives a silent host up after 3 s, and a first host (one actor,
    prefetch 3) to be killed; the test starts a surviving host when it wants."""
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False,
                        router_args=["--host-timeout", "3"],
                        workers_args=["--prefetch", "3"]) as cluster:
        doomed = cluster.start_workers()
        yield cluster, doomed


def lose_host(cluster: Cluster, host: Process) -> float:
    """Start a surviving host, then SIGKILL every process of ``host``; returns when."""
    cluster.start_workers()
    host.kill_group(signal.SIGKILL)
    host.popen.wait(5)
    return time.monotonic()


def test_lost_host_early_ack_running_task_fails_with_worker_lost_error(tmp_path, log,
                                                                      gate):
    with host_to_lose(tmp_path) as (cluster, doomed):
        result = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, result.id)
        lost_at = lose_host(cluster, doomed)
        with pytest.raises(zq.WorkerLostError, match="lost"):
            result.get(timeout=10)
        assert 1.5 <= time.monotonic() - lost_at < 5.5
        gate.touch()
        assert faults.quick.delay(str(log), 1).get(timeout=10) == 1
        assert run_counts(log)[result.id] == 1


def test_lost_host_acks_late_running_task_is_redelivered_to_the_surviving_host(
        tmp_path, log, gate):
    with host_to_lose(tmp_path) as (cluster, doomed):
        result = faults.hold_late.delay(str(log), str(gate))
        first = wait_for_run(log, result.id)
        lost_at = lose_host(cluster, doomed)
        second = wait_for_run(log, result.id, count=2, timeout_s=10)
        assert 1.5 <= time.monotonic() - lost_at < 5.5
        gate.touch()
        assert result.get(timeout=10) == "released"
        assert (first.redelivered, second.redelivered) == (False, True)
        assert second.pid in spawned_children(cluster.workers[-1].pid)


def test_lost_host_prefetched_tasks_are_requeued_to_the_surviving_host(tmp_path, log, gate):
    with host_to_lose(tmp_path) as (cluster, doomed):
        busy = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, busy.id)
        prefetched = [faults.quick.delay(str(log), i) for i in range(2)]
        wait_until(lambda: cluster.stats()["inflight"] == 3, 5,
                   "two tasks prefetched behind the busy one")
        lost_at = lose_host(cluster, doomed)
        assert [r.get(timeout=10) for r in prefetched] == [0, 1]
        assert 1.5 <= time.monotonic() - lost_at < 5.5
        with pytest.raises(zq.WorkerLostError):
            busy.get(timeout=5)
        survivors = spawned_children(cluster.workers[-1].pid)
        assert {run.pid for run in runs(log) if run.task_id != busy.id} <= survivors
        counts = run_counts(log)
        assert [counts[r.id] for r in prefetched] == [1, 1]


# -- the router killed and restarted -----------------------------------------------------


def test_router_killed_with_thousands_queued_replays_each_unfinished_task_once(tmp_path,
                                                                              log):
    """3000 tasks queued behind two busy actors, some scheduled by countdown and eta, and
    earlier tasks finished: after the router's SIGKILL and restart every task completes,
    the scheduled ones not before their time, and no finished task runs again."""
    with faults_cluster(tmp_path / "cluster", concurrency=2) as cluster:
        finished = group(faults.quick.s(str(log), i) for i in range(100)).apply_async()
        assert finished.get(timeout=20) == list(range(100))
        running = [faults.nap_late.delay(str(log), 2.0) for _ in range(2)]
        for result in running:
            wait_for_run(log, result.id)
        queued = group(faults.quick.s(str(log), i) for i in range(3000)).apply_async()
        sent_at = time.time()
        by_countdown = [faults.stamp.apply_async((str(log),), countdown=4.0)
                        for _ in range(10)]
        eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=4.5)
        by_eta = [faults.stamp.apply_async((str(log),), eta=eta) for _ in range(10)]
        faults.app.flush(10)  # all accepted before the router is asked
        assert cluster.stats()["scheduled"] == 20

        cluster.restart_router()

        assert queued.get(timeout=30) == list(range(3000))
        assert all(ran_at >= sent_at + 4.0 for ran_at in
                   [r.get(timeout=15) for r in by_countdown])
        assert all(ran_at >= eta.timestamp() for ran_at in [r.get(timeout=15) for r in by_eta])
        assert [r.get(timeout=15) for r in running] == [2.0, 2.0]
        wait_until(lambda: cluster.actor_count() == 2, 10, "both actors to reconnect")
    counts = run_counts(log)
    assert [counts[r.id] for r in finished] == [1] * 100
    assert [counts[r.id] for r in queued] == [1] * 3000
    assert [counts[r.id] for r in by_countdown + by_eta] == [1] * 20
    # acks_late: at least once; a rerun is allowed, a third run is not.
    assert all(1 <= counts[r.id] <= 2 for r in running)


def test_router_killed_with_fanout_copies_waiting_runs_each_copy_once(tmp_path, log):
    """Each copy of a task sent to a fanout exchange is journaled on its own: after the
    router's SIGKILL every copy, queued or scheduled, runs once in its own queue."""
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False) as cluster:
        queued = [faults.quick.apply_async((str(log), i), exchange="everyone")
                  for i in range(20)]
        scheduled = [faults.quick.apply_async((str(log), i), exchange="everyone",
                                              countdown=2.0) for i in range(5)]
        faults.app.flush(10)  # every copy accepted before the router is asked
        assert cluster.stats()["tasks"] == 50

        cluster.restart_router()
        default = cluster.start_workers(concurrency=1)
        spare = cluster.start_workers("-Q", "spare", concurrency=1)

        assert [r.get(timeout=15) for r in queued + scheduled] == [*range(20), *range(5)]
        cluster.wait_for(lambda s: s["tasks"] == 0, "every copy to finish", timeout_s=15)
        default_pids, spare_pids = spawned_children(default.pid), spawned_children(spare.pid)
    for result in queued + scheduled:
        pids = sorted(run.pid for run in runs_of(log, result.id))
        assert len(pids) == 2, f"{result.id} ran {len(pids)} times"
        assert {pids[0], pids[1]} & default_pids and {pids[0], pids[1]} & spare_pids


def test_router_with_journal_fsync_killed_replays_every_accepted_task_once(tmp_path, log):
    """With --journal-fsync an ACCEPTED waits for the fsync covering its task; tasks sent
    by several clients at once share syncs, and a SIGKILL loses none of them."""
    with faults_cluster(tmp_path / "cluster", concurrency=2, start_workers=False,
                        router_args=["--journal-fsync"]) as cluster:
        batches = [group(faults.quick.s(str(log), i) for i in range(200)).apply_async()]
        singles: list[Any] = []

        def send(first: int) -> None:
            try:
                singles.extend(faults.quick.delay(str(log), i)
                               for i in range(first, first + 50))
            finally:
                app.close()  # this thread's sockets

        senders = [threading.Thread(target=send, args=(k * 50,)) for k in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(30)
        assert len(singles) == 200
        journal = cluster.stats()["journal"]
        assert 1 <= journal["syncs"] <= journal["writes"]

        cluster.restart_router()
        cluster.start_workers()

        assert batches[0].get(timeout=30) == list(range(200))
        assert sorted(r.get(timeout=30) for r in singles) == list(range(200))
    counts = run_counts(log)
    assert [counts[r.id] for r in batches[0]] == [1] * 200
    assert [counts[r.id] for r in singles] == [1] * 200


def test_early_ack_task_finishing_while_the_router_is_down_does_not_run_again(tmp_path, log,
                                                                             gate):
    """At most once without acks_late: the actor finished the task (its DONE waits in the
    socket for the router to come back), so the replayed copy must not run."""
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        result = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, result.id)
        kill_router(cluster)
        gate.touch()
        wait_for_run(ended(log), result.id)
        cluster.start_router()
        assert result.get(timeout=15) == "released"
        after_everything_queued(log)
        assert run_counts(log)[result.id] == 1


def test_early_ack_task_running_across_a_router_restart_does_not_run_again(tmp_path, log,
                                                                          gate):
    """The router comes back while the task still runs; it must not be handed out again."""
    with faults_cluster(tmp_path / "cluster", concurrency=2) as cluster:
        result = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, result.id)
        cluster.restart_router()
        wait_until(lambda: cluster.actor_count() >= 1, 10, "the idle actor to reconnect")
        behind = [faults.quick.delay(str(log), i) for i in range(3)]
        # Queued behind the replayed copy: once they ran, that copy was handed out or kept.
        wait_until(lambda: all(run_counts(log)[r.id] for r in behind)
                   or len(runs_of(log, result.id)) > 1, 10,
                   "the tasks sent after the restart to run")
        gate.touch()
        assert result.get(timeout=15) == "released"
        assert [r.get(timeout=15) for r in behind] == [0, 1, 2]
        wait_until(lambda: cluster.actor_count() == 2, 10, "both actors to reconnect")
        assert run_counts(log)[result.id] == 1


def test_client_blocked_in_get_during_a_router_restart_gets_its_result(tmp_path, log):
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        result = faults.quick.apply_async((str(log), "late"), countdown=4.0)
        waiter = Background(lambda: app.AsyncResult(result.id).get(timeout=25))
        waiter.wait_until_blocked_in_get()
        cluster.restart_router()
        assert waiter.running()
        assert waiter.result(25) == "late"
        assert run_counts(log)[result.id] == 1


def test_router_sigterm_exits_cleanly_and_a_restart_replays_what_was_unfinished(tmp_path,
                                                                               log):
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False) as cluster:
        waiting = [faults.quick.delay(str(log), i) for i in range(5)]
        scheduled = faults.quick.apply_async((str(log), "scheduled"), countdown=2.0)
        revoked = faults.quick.delay(str(log), "revoked")
        revoked.revoke()
        router = cluster.router_process
        assert router is not None
        router.signal(signal.SIGTERM)
        assert exit_code(router, 10) == 0
        assert "router stopped" in router.log()
        router.stop()
        cluster.start_router()
        assert cluster.stats()["tasks"] == 6
        cluster.start_workers()
        assert [r.get(timeout=15) for r in waiting] == list(range(5))
        assert scheduled.get(timeout=15) == "scheduled"
        assert revoked.state == states.REVOKED
    assert run_counts(log) == Counter({r.id: 1 for r in [*waiting, scheduled]})


# -- the results actor killed -------------------------------------------------------------


def test_killed_results_actor_is_restarted_and_keeps_stored_results(tmp_path, log):
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        done = group(faults.quick.s(str(log), i) for i in range(20)).apply_async()
        assert done.get(timeout=10) == list(range(20))
        failed = faults.hold.delay(str(log), str(tmp_path / "never"), 0.1)
        with pytest.raises(TimeoutError):
            failed.get(timeout=10)
        victim = results_actor_pid(cluster)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: spawned_children(cluster.router_process.pid) - {victim}, 10,
                   "a new results actor")
        fresh = App(router=cluster.router)
        try:
            assert [fresh.AsyncResult(r.id).get(timeout=10) for r in done] == list(range(20))
            assert fresh.AsyncResult(failed.id).state == states.FAILURE
            assert faults.quick.delay(str(log), "after").get(timeout=10) == "after"
        finally:
            fresh.close()


def test_client_blocked_in_get_while_the_results_actor_restarts_gets_its_result(
        tmp_path, log, gate, monkeypatch):
    """The client notices the reconnection and asks again at once: with its periodic
    renewal put off past the test's timeout, only that can bring the result."""
    monkeypatch.setattr(zq.results_client, "_WAIT_RENEW_S", 120.0)
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        result = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, result.id)
        waiter = Background(lambda: app.AsyncResult(result.id).get(timeout=25))
        waiter.wait_until_blocked_in_get()
        victim = results_actor_pid(cluster)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: spawned_children(cluster.router_process.pid) - {victim}, 10,
                   "a new results actor")
        gate.touch()
        assert waiter.result(25) == "released"


# -- sending while the router is away ----------------------------------------------------


def test_delay_waits_for_a_router_that_comes_back_and_the_task_runs_once(tmp_path, log):
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        assert faults.quick.delay(str(log), "before").get(timeout=10) == "before"
        kill_router(cluster)
        sender = Background(lambda: faults.quick.apply_async(
            (str(log), "sent"), publish_timeout_s=20).id)
        time.sleep(2.5)  # the router stays down through at least one resend
        assert sender.running()
        cluster.start_router()
        task_id = sender.result(20)
        assert app.AsyncResult(task_id).get(timeout=15) == "sent"
        after_everything_queued(log)
        assert run_counts(log)[task_id] == 1


def test_send_to_a_router_that_stays_down_fails_after_publish_timeout(tmp_path, log):
    client = App("stranded", router=f"ipc://{tmp_path / 'nobody.sock'}")
    try:
        started = time.monotonic()
        with pytest.raises(zq.PublishError, match="no answer from the router"):
            client.send_task("tests.apps.faults.quick", (str(log), "never"),
                             publish_timeout_s=3)
        assert 3.0 <= time.monotonic() - started < 3.5
    finally:
        client.close()


def test_same_task_id_sent_twice_runs_once(one_actor, log, gate):
    task_id = f"resent-{uuid.uuid4()}"
    busy = faults.hold.delay(str(log), str(gate))
    wait_for_run(log, busy.id)
    first = faults.quick.apply_async((str(log), 1), task_id=task_id)
    again = faults.quick.apply_async((str(log), 1), task_id=task_id)
    gate.touch()
    assert first.get(timeout=10) == again.get(timeout=10) == 1
    faults.quick.apply_async((str(log), 1), task_id=task_id)
    after_everything_queued(log)
    assert run_counts(log)[task_id] == 1


# -- revoke ------------------------------------------------------------------------------


def test_revoked_queued_task_never_runs_and_ends_revoked(one_actor, log, gate):
    busy = faults.hold.delay(str(log), str(gate))
    wait_for_run(log, busy.id)
    queued = faults.quick.delay(str(log), "revoked")
    queued.revoke()
    gate.touch()
    with pytest.raises(zq.TaskRevokedError):
        queued.get(timeout=10)
    assert queued.state == states.REVOKED
    after_everything_queued(log)
    assert run_counts(log)[queued.id] == 0


def test_revoked_countdown_task_never_runs_and_ends_revoked(one_actor, log):
    scheduled = [faults.quick.apply_async((str(log), i), countdown=1.0) for i in range(2)]
    app.control.revoke([r.id for r in scheduled])
    for result in scheduled:
        with pytest.raises(zq.TaskRevokedError):
            result.get(timeout=10)
        assert result.state == states.REVOKED
    later = faults.quick.apply_async((str(log), "later"), countdown=1.5)
    assert later.get(timeout=10) == "later"
    assert run_counts(log) == Counter({later.id: 1})


def past_the_first_supervisor_heartbeat(interval_s: float) -> None:
    """The router learns where a host's supervisor listens (to have it kill an actor) from
    the supervisor's first heartbeat, one interval after it starts; nothing reports that."""
    time.sleep(2 * interval_s)


@pytest.mark.parametrize("task", [faults.hold, faults.hold_late])
def test_revoke_terminate_kills_the_running_task_and_replaces_its_actor(tmp_path, log, gate,
                                                                       task):
    with faults_cluster(tmp_path / "cluster", concurrency=1,
                        workers_args=["--heartbeat-interval", "0.25"]) as cluster:
        past_the_first_supervisor_heartbeat(0.25)
        result = task.delay(str(log), str(gate))
        victim = wait_for_run(log, result.id).pid
        result.revoke(terminate=True)
        with pytest.raises(zq.TaskRevokedError):
            result.get(timeout=10)
        assert result.state == states.REVOKED
        assert not psutil.pid_exists(victim)
        wait_until(lambda: cluster.actor_count() == 1, 10, "a replacement actor")
        gate.touch()
        after_everything_queued(log)
        assert run_counts(log)[result.id] == 1
        assert victim not in {run.pid for run in runs(log) if run.task_id != result.id}


def test_revoke_terminate_before_the_supervisors_first_heartbeat_kills_the_task(tmp_path,
                                                                               log, gate):
    """A terminate must not depend on when the supervisor last heartbeated: the router
    knows the actor's host, and a supervisor's identity is its host name. (A 5 s heartbeat
    interval makes the window before the first heartbeat wide enough to hit every time.)"""
    with faults_cluster(tmp_path / "cluster", concurrency=1,
                        workers_args=["--heartbeat-interval", "5"]):
        result = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, result.id)
        result.revoke(terminate=True)
        with pytest.raises(zq.TaskRevokedError):
            result.get(timeout=4)
        assert not runs_of(ended(log), result.id)


def test_revoked_id_stays_revoked_across_a_router_restart(tmp_path, log):
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        scheduled = faults.quick.apply_async((str(log), "revoked"), countdown=3.0)
        scheduled.revoke()
        cluster.restart_router()
        later = faults.quick.apply_async((str(log), "later"), countdown=3.5)
        resent = faults.quick.apply_async((str(log), "resent"), task_id=scheduled.id)
        assert later.get(timeout=15) == "later"
        with pytest.raises(zq.TaskRevokedError):
            resent.get(timeout=5)
        assert run_counts(log) == Counter({later.id: 1})


# -- stopping a worker host --------------------------------------------------------------


@contextmanager
def host_to_stop(tmp_path: Path, *args: str) -> Iterator[tuple[Cluster, Process]]:
    """A router and a first host (one actor, prefetch 3) to be stopped; ``args`` go to
    that host only. The test starts another host when it wants."""
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False) as cluster:
        host = cluster.start_workers("--prefetch", "3", *args)
        yield cluster, host


def wait_for_log(process: Process, text: str) -> None:
    wait_until(lambda: text in process.log(), 5, f"{text!r} in the log of {process.name}")


def test_warm_shutdown_lets_the_running_task_finish_and_hands_back_prefetched_ones(
        tmp_path, log, gate):
    with host_to_stop(tmp_path) as (cluster, host):
        running = faults.hold.delay(str(log), str(gate))
        first = wait_for_run(log, running.id)
        prefetched = [faults.quick.delay(str(log), i) for i in range(2)]
        wait_until(lambda: cluster.stats()["inflight"] == 3, 5,
                   "two tasks prefetched behind the running one")
        # Started before the stop: the stopping host kills a task still running 2 s
        # after it is told to stop, and starting a host can take longer than that.
        other = cluster.start_workers(concurrency=1)
        host.signal(signal.SIGTERM)
        wait_for_log(host, "warm shutdown")
        gate.touch()
        assert running.get(timeout=10) == "released"
        assert exit_code(host, 10) == 0
        assert [r.get(timeout=10) for r in prefetched] == [0, 1]
        survivors = spawned_children(other.pid)
        assert {run.pid for run in runs(log) if run.task_id != running.id} <= survivors
    counts = run_counts(log)
    assert [counts[r.id] for r in [running, *prefetched]] == [1, 1, 1]
    assert first.pid not in survivors


def test_warm_shutdown_while_the_router_is_paused_loses_nothing(tmp_path, log, gate):
    """The host's last words reach a router paused by SIGSTOP all at once, on two sockets:
    its actor's progress reports, DONEs and BYE on one, its supervisor's LOST and BYE on
    the other. Whatever order the router reads them in, the task that finished stays
    finished and the prefetched ones are requeued. (The progress reports put the actor's
    DONE behind the supervisor's BYE in the router's fair queueing.)"""
    with host_to_stop(tmp_path) as (cluster, host):
        running = faults.hold_then_report.delay(str(log), str(gate), 20)
        wait_for_run(log, running.id)
        prefetched = [faults.quick.delay(str(log), i) for i in range(2)]
        wait_until(lambda: cluster.stats()["inflight"] == 3, 5,
                   "two tasks prefetched behind the running one")
        cluster.start_workers(concurrency=1)
        router = cluster.router_process
        assert router is not None
        router.signal(signal.SIGSTOP)
        try:
            host.signal(signal.SIGTERM)
            gate.touch()
            assert exit_code(host, 10) == 0
        finally:
            router.signal(signal.SIGCONT)
        assert running.get(timeout=10) == "released"
        assert [r.get(timeout=10) for r in prefetched] == [0, 1]
    counts = run_counts(log)
    assert [counts[r.id] for r in [running, *prefetched]] == [1, 1, 1]


def test_warm_shutdown_after_a_router_restart_hands_back_prefetched_tasks(tmp_path, log,
                                                                          gate):
    """The actor took three tasks at once; the router restarts while it runs the first;
    then the host is stopped: the two it never started are handed back (DONE with
    requeue) to a router that replayed them, and they still run, once, elsewhere."""
    with host_to_stop(tmp_path) as (cluster, host):
        taken = group([faults.hold.s(str(log), str(gate)), faults.quick.s(str(log), 0),
                       faults.quick.s(str(log), 1)]).apply_async()
        running, *prefetched = taken.results
        wait_for_run(log, running.id)
        cluster.restart_router()
        host.signal(signal.SIGTERM)
        wait_for_log(host, "warm shutdown")
        gate.touch()
        assert exit_code(host, 10) == 0
        cluster.start_workers(concurrency=1)
        assert running.get(timeout=10) == "released"
        assert [r.get(timeout=10) for r in prefetched] == [0, 1]
    counts = run_counts(log)
    assert [counts[r.id] for r in taken.results] == [1, 1, 1]


def test_warm_shutdown_takes_no_new_task(tmp_path, log, gate):
    with host_to_stop(tmp_path) as (cluster, host):
        running = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, running.id)
        host.signal(signal.SIGTERM)
        wait_for_log(host, "warm shutdown")
        later = faults.quick.delay(str(log), "later")
        gate.touch()
        assert running.get(timeout=10) == "released"
        assert exit_code(host, 10) == 0
        assert later.state == states.PENDING
        other = cluster.start_workers(concurrency=1)
        assert later.get(timeout=10) == "later"
        assert runs_of(log, later.id)[0].pid in spawned_children(other.pid)


def test_shutdown_timeout_kills_a_task_still_running(tmp_path, log, gate):
    with host_to_stop(tmp_path, "--shutdown-timeout", "1") as (_, host):
        result = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, result.id)
        host.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert exit_code(host, 10) == 0
        # Not before its timeout, and without waiting for the task (held for 25 s).
        assert 1.0 <= time.monotonic() - stopped_at < 10.0
        with pytest.raises(zq.WorkerLostError):
            result.get(timeout=10)
        assert run_counts(log)[result.id] == 1


def test_shutdown_timeout_hands_a_running_acks_late_task_to_another_host(tmp_path, log,
                                                                        gate):
    with host_to_stop(tmp_path, "--shutdown-timeout", "1") as (cluster, host):
        result = faults.hold_late.delay(str(log), str(gate))
        first = wait_for_run(log, result.id)
        other = cluster.start_workers(concurrency=1)
        host.signal(signal.SIGTERM)
        assert exit_code(host, 10) == 0
        second = wait_for_run(log, result.id, count=2)
        gate.touch()
        assert result.get(timeout=10) == "released"
        assert (first.redelivered, second.redelivered) == (False, True)
        assert second.pid in spawned_children(other.pid)


@pytest.mark.parametrize("signals", [
    (signal.SIGTERM, signal.SIGTERM), (signal.SIGQUIT,)], ids=["TERM-TERM", "QUIT"])
def test_cold_shutdown_exits_at_once_and_the_acks_late_task_runs_elsewhere(tmp_path, log,
                                                                          gate, signals):
    # A warm shutdown would wait 20 s for the task: a cold one is told apart by time.
    with host_to_stop(tmp_path, "--shutdown-timeout", "20") as (cluster, host):
        result = faults.hold_late.delay(str(log), str(gate))
        first = wait_for_run(log, result.id)
        other = cluster.start_workers(concurrency=1)
        for signum in signals[:-1]:
            host.signal(signum)
            wait_for_log(host, "warm shutdown")
        host.signal(signals[-1])
        stopped_at = time.monotonic()
        assert exit_code(host, 10) == 2
        # At once: not after the warm shutdown's 20 s, nor the task (held for 25 s).
        assert time.monotonic() - stopped_at < 10.0
        second = wait_for_run(log, result.id, count=2)
        gate.touch()
        assert result.get(timeout=10) == "released"
        assert (first.redelivered, second.redelivered) == (False, True)
        assert second.pid in spawned_children(other.pid)


# -- bounded queues ----------------------------------------------------------------------


def test_max_queue_length_refuses_the_sixth_task_and_keeps_the_first_five(tmp_path, log):
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False,
                        router_args=["--max-queue-length", "5"]) as cluster:
        accepted = [faults.quick.delay(str(log), i) for i in range(5)]
        with pytest.raises(zq.QueueFull,
                           match=r"queue 'celery' holds 5 tasks.*max_queue_length"):
            faults.quick.delay(str(log), 5).accepted(10)
        with pytest.raises(zq.QueueFull):
            faults.quick.apply_async((str(log), 6), confirm=True)
        sixth = faults.quick.delay(str(log), 7)
        with pytest.raises(zq.QueueFull):
            zq.App.flush(faults.app, 10)
        with pytest.raises(zq.QueueFull):
            sixth.get(timeout=1)
        cluster.start_workers()
        assert [r.get(timeout=10) for r in accepted] == list(range(5))
    assert sorted(run_counts(log).values()) == [1] * 5


# -- CURVE -------------------------------------------------------------------------------


class Keys(NamedTuple):
    dir: Path
    authorized: Path

    def secret(self, name: str) -> str:
        return str(self.dir / f"{name}.key_secret")

    def public(self, name: str) -> str:
        return str(self.dir / f"{name}.key")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    subprocess.run([sys.executable, "-m", "zq", "keys", "generate", str(directory),
                    "--name", "router", "--name", "client", "--name", "worker",
                    "--name", "intruder"], check=True, capture_output=True, timeout=30)
    authorized = directory / "authorized"
    authorized.mkdir()
    for name in ("client", "worker"):
        shutil.copy(directory / f"{name}.key", authorized)
    return Keys(directory, authorized)


@pytest.fixture(scope="module")
def curve_cluster(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Cluster]:
    """A CURVE router that admits the client and worker keys, and one authorized host."""
    with Cluster(tmp_path_factory.mktemp("curve"), app=FAULTS_APP, concurrency=1,
                 client_keys=client_keys(keys.secret("client"), keys.public("router")),
                 start_workers=False,
                 router_args=["--curve-secret-key", keys.secret("router"),
                              "--curve-authorized-dir", str(keys.authorized)]) as cluster:
        cluster.start_workers("--curve-secret-key", keys.secret("worker"),
                              "--curve-server-key", keys.public("router"))
        yield cluster


@contextmanager
def curve_client(cluster: Cluster, keys: Keys, name: str | None,
                 publish_timeout_s: float = 10.0) -> Iterator[App]:
    """An App with the key pair ``name`` (None: plaintext), sending to the CURVE router."""
    settings: dict[str, Any] = {"publish_timeout_s": publish_timeout_s}
    if name is not None:
        settings.update(curve_secret_key=keys.secret(name),
                        curve_server_key=keys.public("router"))
    client = App("curve-client", router=cluster.router, **settings)
    try:
        yield client
    finally:
        client.close()


def results_pub_endpoint(cluster: Cluster) -> str:
    return protocol.unpack((cluster.data_dir / "results-endpoints.msgpack").read_bytes())["pub"]


@contextmanager
def listening(endpoint: str, keys: Keys, name: str | None) -> Iterator[zmq.Socket]:
    """A raw SUB socket subscribed to every topic, as ``name`` (None: plaintext)."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    if name is not None:
        public, secret = zmq.auth.load_certificate(keys.secret(name))
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey, _ = zmq.auth.load_certificate(keys.public("router"))
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()


def test_curve_client_with_an_authorized_key_sends_gets_and_watches(curve_cluster, keys,
                                                                   log):
    with curve_client(curve_cluster, keys, "client") as client:
        result = client.send_task("tests.apps.faults.quick", (str(log), "secret"))
        assert result.get(timeout=10) == "secret"
        events = client.watch([result.id], timeout_s=5)
        assert next(events)["state"] == states.SUCCESS
        events.close()
        watched = client.send_task("tests.apps.faults.quick", (str(log), "watched"),
                                   countdown=0.5)
        seen = []
        for event in client.watch([watched.id], timeout_s=10):
            seen.append(event["state"])
            if event["state"] in states.READY_STATES:
                break
        assert seen[-1] == states.SUCCESS
        assert watched.get(timeout=10) == "watched"


@pytest.mark.parametrize("name", [None, "intruder"], ids=["plaintext", "intruder-key"])
def test_curve_client_without_an_authorized_key_can_neither_send_nor_watch(
        curve_cluster, keys, log, name):
    endpoint = results_pub_endpoint(curve_cluster)
    with curve_client(curve_cluster, keys, name, publish_timeout_s=1) as outsider, \
            curve_client(curve_cluster, keys, "client") as insider, \
            listening(endpoint, keys, name) as eavesdropper, \
            listening(endpoint, keys, "client") as subscriber:
        with pytest.raises(zq.PublishError):
            outsider.send_task("tests.apps.faults.quick", (str(log), "outsider"))
        with pytest.raises(zq.PublishError):
            next(outsider.watch(timeout_s=2))
        sent = []
        deadline = time.monotonic() + 10
        while not subscriber.poll(100):
            assert time.monotonic() < deadline, "the authorized subscriber heard nothing"
            sent.append(insider.send_task("tests.apps.faults.quick", (str(log), "insider")))
            assert sent[-1].get(timeout=10) == "insider"
        assert not eavesdropper.poll(200)
    assert sorted(run.task_id for run in runs(log)) == sorted(r.id for r in sent)


@contextmanager
def unauthorized_host(cluster: Cluster, keys: Keys) -> Iterator[Process]:
    """A ``zq workers`` host with the intruder's key, consuming the queue ``intruded``."""
    host = cluster.start_workers("-Q", "intruded",
                                 "--curve-secret-key", keys.secret("intruder"),
                                 "--curve-server-key", keys.public("router"), wait=False)
    try:
        yield host
    finally:
        host.kill_group(signal.SIGKILL)
        host.stop()
        cluster.workers.remove(host)


def test_curve_worker_with_an_unauthorized_key_never_receives_tasks(curve_cluster, keys,
                                                                   log):
    with unauthorized_host(curve_cluster, keys) as intruder, \
            curve_client(curve_cluster, keys, "client") as client:
        results = [client.send_task("tests.apps.faults.quick", (str(log), i),
                                    queue="intruded") for i in range(3)]
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert intruder.alive()
            stats = curve_cluster.stats()
            assert stats["actors"] == 1
            assert stats["queued"] == {"intruded": 3}
            time.sleep(0.1)
        assert not log.exists()
        curve_cluster.start_workers(
            "-Q", "intruded", "--curve-secret-key", keys.secret("worker"),
            "--curve-server-key", keys.public("router"))
        assert [r.get(timeout=10) for r in results] == [0, 1, 2]


def test_curve_worker_with_an_unauthorized_key_stops_on_sigterm(curve_cluster, keys):
    with unauthorized_host(curve_cluster, keys) as intruder:
        time.sleep(2.5)  # its actor has tried to heartbeat to the router that refused it
        intruder.signal(signal.SIGTERM)
        assert exit_code(intruder, 5) == 0
