"""Children die with their parents, and endpoints are stable (issue 9, items 1 and 8).

The results actor exits when its router dies, actors exit when their supervisor dies, and a
router restarted on the same data dir gives its results actor the endpoints of the one
before, so that a client blocked in ``get()`` across the restart is answered.

Each test starts real processes, kills one by its PID alone (SIGKILL, as a crash or the
OOM killer would) or by its process group, and then looks for every process of the killed
one's family by PID: none may remain.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

import zq
from tests.apps import faults
from tests.conftest import connect, wait_until
from tests.test_faults import (
    FAULTS_APP,
    Background,
    run_counts,
    runs_of,
    spawned_children,
    wait_for_run,
)
from zq import protocol, states
from zq.results.sockets import bind
from zq.testing import Cluster, Process

pytestmark = pytest.mark.faults

app = faults.app
ROLES = ("ingest", "query", "pub")
# How soon a child must be gone once its parent is: PDEATHSIG acts at once; the results
# actor stores what reached it first. Generous for a loaded two-core machine.
GONE_WITHIN_S = 3.0


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "runs.log"


# -- processes, by PID -------------------------------------------------------------------


def family(process: Process) -> list[psutil.Process]:
    """``process`` and every process it started, as psutil handles (which know their
    start time, so a reused PID is never mistaken for one of them)."""
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` that still run (a zombie waiting to be reaped does not)."""
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def gone_within(processes: list[psutil.Process], timeout_s: float) -> float:
    """Seconds until every one of ``processes`` has exited; fails past ``timeout_s``."""
    start = time.monotonic()
    while running(processes):
        if time.monotonic() - start > timeout_s:
            left = [(p.pid, " ".join(p.cmdline())[-80:]) for p in running(processes)]
            pytest.fail(f"still running {timeout_s}s after their parent died: {left}")
        time.sleep(0.02)
    return time.monotonic() - start


def kill_pid(process: Process, killed: list[psutil.Process]) -> list[psutil.Process]:
    """SIGKILL ``process`` alone (not its group); its family is added to ``killed``, and
    the children are returned, which should now exit by themselves."""
    members = family(process)
    assert len(members) >= 2, "no children to orphan"
    killed.extend(members)
    os.kill(process.pid, signal.SIGKILL)
    process.popen.wait(10)
    return members[1:]


def results_actor_pid(router: Process) -> int:
    (pid,) = spawned_children(router.pid)
    return pid


def forget(process: Process) -> None:
    """Close what the test holds of a killed process, once its children are known to be
    gone: its ``stop`` kills its process group, which would hide an orphan left in it."""
    process.stop()


@pytest.fixture
def killed() -> Iterator[list[psutil.Process]]:
    """Every process a test killed a parent of; none may outlive the test. Those that do
    are killed here, by PID, after failing the test."""
    processes: list[psutil.Process] = []
    yield processes
    left = running(processes)
    for p in left:
        p.kill()
    assert not left, f"orphans left: {[p.pid for p in left]}"


def results_endpoints(cluster: Cluster) -> dict[str, str]:
    saved = protocol.unpack((cluster.data_dir / "results-endpoints.msgpack").read_bytes())
    return {role: saved[role] for role in ROLES}


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def orphans_cluster(directory: Path, transport: str = "ipc", workers_args: Sequence[str] = (),
                    **options: Any) -> Iterator[Cluster]:
    """A cluster of the fault tasks whose router listens on ``transport``: with tcp, its
    results actor binds ports of its own choosing, which a restart must keep."""
    cluster = Cluster(directory, app=FAULTS_APP,
                      workers_args=["--shutdown-timeout", "2", *workers_args], **options)
    if transport == "tcp":
        cluster.router = cluster.env["ZQ_ROUTER"] = f"tcp://127.0.0.1:{free_tcp_port()}"
    previous = app.settings.router
    with cluster:
        connect(app, cluster)
        try:
            yield cluster
        finally:
            app.close()
            app.conf.update(router=previous)


# -- the router killed: its results actor goes, the endpoints stay ----------------------


@pytest.mark.parametrize(("transport", "stuck"), [
    ("ipc", False), ("tcp", False), ("ipc", True), ("tcp", True)],
    ids=["ipc", "tcp", "ipc-stuck", "tcp-stuck"])
def test_router_pid_killed_its_results_actor_exits_and_the_restart_keeps_its_endpoints(
        tmp_path, log, killed, transport, stuck):
    """A client blocked in get() across the kill is answered by the restarted router's
    results actor, on the endpoint it was connected to.

    ``stuck``: the old results actor is stopped (SIGSTOP) so that it cannot exit by
    itself; the new router must kill it rather than bind beside it (tcp: on other ports;
    ipc: taking the path while the waiting client stays connected to the stuck one).
    """
    with orphans_cluster(tmp_path / "cluster", transport, concurrency=1) as cluster:
        assert faults.quick.delay(str(log), "before").get(timeout=10) == "before"
        endpoints = results_endpoints(cluster)
        result = faults.quick.apply_async((str(log), "late"), countdown=3.0)
        waiter = Background(lambda: app.AsyncResult(result.id).get(timeout=30))
        waiter.wait_until_blocked_in_get()

        old = cluster.router_process
        assert old is not None
        if stuck:
            os.kill(results_actor_pid(old), signal.SIGSTOP)
        children = kill_pid(old, killed)
        if stuck:
            cluster.start_router()
        took = gone_within(children, GONE_WITHIN_S)
        forget(old)
        if not stuck:
            cluster.start_router()

        assert results_endpoints(cluster) == endpoints
        assert waiter.result(30) == "late"
        log_text = cluster.router_process.log()
        assert ("did not exit within 5 s; killing it" in log_text) == stuck
        assert "instead" not in log_text
    if not stuck:
        print(f"results actor gone {took:.2f}s after its router's SIGKILL")
    assert run_counts(log)[result.id] == 1


def test_results_actor_binds_a_remembered_port_once_it_is_released():
    taken = zmq.Context.instance().socket(zmq.PULL)
    taken.linger = 0
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    threading.Timer(0.5, taken.close).start()
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.linger = 0
    try:
        endpoint = f"tcp://127.0.0.1:{port}"
        assert bind(sock, endpoint, time.monotonic() + 5.0) == endpoint
    finally:
        sock.close()


def test_results_actor_takes_another_port_when_a_remembered_one_stays_taken(caplog):
    taken = zmq.Context.instance().socket(zmq.PULL)
    taken.linger = 0
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.linger = 0
    try:
        endpoint = f"tcp://127.0.0.1:{port}"
        started = time.monotonic()
        bound = bind(sock, endpoint, started + 0.5)
        assert 0.5 <= time.monotonic() - started < 2.0
        assert bound.startswith("tcp://127.0.0.1:") and bound != endpoint
        assert f"could not bind {endpoint} again" in caplog.text
        assert f"bound {bound} instead" in caplog.text
    finally:
        sock.close()
        taken.close()


class Client:
    """A client thread sending batches of tasks, plain and acks_late, and waiting for
    each batch's results, until told to stop."""

    def __init__(self, log: Path, stop: threading.Event, batch: int = 20):
        self.log = log
        self.stop = stop
        self.batch = batch
        self.accepted: list[str] = []
        self.late: set[str] = set()
        self.delivered: list[str] = []
        self.undelivered: dict[str, str] = {}  # task id -> what get() raised
        self.refused = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self._one_batch()
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
            self.error = exc
        finally:
            app.close()

    def _one_batch(self) -> None:
        sent = []
        for k in range(self.batch):
            late = k % 2 == 1
            try:
                if late:
                    result = faults.nap_late.delay(str(self.log), 0.0)
                    self.late.add(result.id)
                else:
                    result = faults.quick.delay(str(self.log), k)
            except zq.PublishError:
                self.refused += 1
                continue
            self.accepted.append(result.id)
            sent.append(result)
        for result in sent:
            try:
                result.get(timeout=15)
                self.delivered.append(result.id)
            except Exception as exc:  # noqa: BLE001 - counted, then asserted on
                self.undelivered[result.id] = f"{type(exc).__name__}: {exc}"

    def finish(self, timeout_s: float) -> Client:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"client still busy after {timeout_s}s"
        if self.error is not None:
            raise self.error
        return self


@pytest.mark.timeout(240)
def test_router_pid_killed_three_times_under_load_every_result_reaches_its_client(
        tmp_path, log, killed):
    with orphans_cluster(tmp_path / "cluster", "tcp", concurrency=2) as cluster:
        endpoints = results_endpoints(cluster)
        stop = threading.Event()
        clients = [Client(log, stop) for _ in range(3)]
        took = []
        try:
            for _ in range(3):
                wait_until(lambda: len(run_counts(log)) >= 100 * (len(took) + 1), 30,
                           "tasks to run between kills")
                old = cluster.router_process
                assert old is not None
                took.append(gone_within(kill_pid(old, killed), GONE_WITHIN_S))
                forget(old)
                cluster.start_router()
                assert results_endpoints(cluster) == endpoints
            time.sleep(1.0)
        finally:
            stop.set()
        for client in clients:
            client.finish(120)
        log_text = cluster.router_process.log()
        accepted = [i for c in clients for i in c.accepted]
        undelivered = {i: why for c in clients for i, why in c.undelivered.items()}
        # Asked again, by a new connection: is the state of each one stored after all?
        stored = {i: app.AsyncResult(i).state for i in undelivered}
        app.close()

    late = set().union(*(c.late for c in clients))
    counts = run_counts(log)
    ran_twice = Counter("acks_late" if i in late else "early ack"
                        for i in accepted if counts[i] > 1)
    print(f"3 router PID kills under load: {len(accepted)} tasks accepted "
          f"({len(late)} acks_late), {sum(len(c.delivered) for c in clients)} results "
          f"delivered, {len(undelivered)} not, {sum(c.refused for c in clients)} refused "
          f"submits, ran twice: {dict(ran_twice)}; results actor gone after "
          f"{', '.join(f'{t:.2f}' for t in took)} s")
    for task_id, why in undelivered.items():
        print(f"  not delivered: {task_id} ({'acks_late' if task_id in late else 'early ack'}"
              f", ran {counts[task_id]} times, stored state {stored[task_id]}): {why}")
    assert len(accepted) >= 300
    assert "instead" not in log_text
    assert all(counts[i] >= 1 for i in accepted)
    # A result stored but never delivered is what a client left talking to an orphan, or
    # to an endpoint that moved, would see: that is this test's business.
    assert not [i for i, state in stored.items() if state in states.READY_STATES]
    # Ran, yet no state stored at all would be a result that died with the router: the
    # journal keeps each result until the results actor stored it.
    assert not undelivered, f"{len(undelivered)} finished tasks have no result"
    assert not ran_twice, f"ran twice across router kills: {dict(ran_twice)}"


# -- a supervisor killed: its actors go --------------------------------------------------


def test_supervisor_pid_killed_its_actors_exit_and_the_router_applies_the_lost_rules(
        tmp_path, log, gate, killed):
    with orphans_cluster(tmp_path / "cluster", concurrency=2, start_workers=False,
                         router_args=["--host-timeout", "2"]) as cluster:
        doomed = cluster.start_workers()
        early = faults.hold.delay(str(log), str(gate))
        late = faults.hold_late.delay(str(log), str(gate))
        first = wait_for_run(log, late.id)
        wait_for_run(log, early.id)
        survivor = cluster.start_workers(concurrency=1)

        actors = kill_pid(doomed, killed)
        killed_at = time.monotonic()
        took = gone_within(actors, GONE_WITHIN_S)
        forget(doomed)

        with pytest.raises(zq.WorkerLostError):
            early.get(timeout=15)
        detected = time.monotonic() - killed_at
        second = wait_for_run(log, late.id, count=2, timeout_s=10)
        assert (first.redelivered, second.redelivered) == (False, True)
        assert second.pid in spawned_children(survivor.pid)
        gate.touch()
        assert late.get(timeout=10) == "released"

        # The dead host's actors do not come back as orphans taking tasks.
        cluster.wait_for(lambda s: s["actors"] == 1, "the lost actors to be gone")
        after = [faults.quick.delay(str(log), i) for i in range(6)]
        assert [r.get(timeout=10) for r in after] == list(range(6))
        time.sleep(2.5)  # past a host timeout: nothing lost comes back
        assert cluster.stats()["actors"] == 1
        survivors = spawned_children(survivor.pid)
    print(f"actors gone {took:.2f}s after their supervisor's SIGKILL; lost reported "
          f"after {detected:.2f}s")
    # By the host timeout (2 s after the last heartbeat, which is at most 1 s old).
    assert 0.9 <= detected < 6.0
    counts = run_counts(log)
    assert (counts[early.id], counts[late.id]) == (1, 2)
    assert [counts[r.id] for r in after] == [1] * 6
    assert {run.pid for r in after for run in runs_of(log, r.id)} <= survivors


# -- whole process groups ----------------------------------------------------------------


def test_router_process_group_killed_leaves_nothing_and_the_restart_keeps_its_endpoints(
        tmp_path, log, killed):
    with orphans_cluster(tmp_path / "cluster", "tcp", concurrency=1) as cluster:
        endpoints = results_endpoints(cluster)
        result = faults.quick.apply_async((str(log), "late"), countdown=3.0)
        waiter = Background(lambda: app.AsyncResult(result.id).get(timeout=30))
        waiter.wait_until_blocked_in_get()
        old = cluster.router_process
        assert old is not None
        members = family(old)
        killed.extend(members)
        old.kill_group(signal.SIGKILL)
        gone_within(members, GONE_WITHIN_S)
        forget(old)
        cluster.start_router()
        assert results_endpoints(cluster) == endpoints
        assert waiter.result(30) == "late"


def test_workers_process_group_killed_leaves_nothing_and_a_new_host_takes_over(
        tmp_path, log, gate, killed):
    with orphans_cluster(tmp_path / "cluster", concurrency=2, start_workers=False,
                         router_args=["--host-timeout", "2"]) as cluster:
        doomed = cluster.start_workers()
        early = faults.hold.delay(str(log), str(gate))
        wait_for_run(log, early.id)
        members = family(doomed)
        killed.extend(members)
        doomed.kill_group(signal.SIGKILL)
        gone_within(members, GONE_WITHIN_S)
        forget(doomed)
        with pytest.raises(zq.WorkerLostError):
            early.get(timeout=15)
        cluster.wait_for(lambda s: s["actors"] == 0, "the lost actors to be gone")
        cluster.start_workers(concurrency=1)
        assert faults.quick.delay(str(log), "after").get(timeout=10) == "after"
    assert run_counts(log)[early.id] == 1
