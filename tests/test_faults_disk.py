"""The router's disk: full, read-only, missing, or in use by another router (issue 9).

Real ``zq router`` and ``zq workers`` processes. A full disk is a small tmpfs mounted as the
router's data dir and filled by a filler file while clients submit (mounting needs root,
as on CI; the tests skip saying so where it is not allowed). The tasks (``tests.apps.faults``)
log each run to a file outside the tmpfs, so that every task id's runs can be counted:
every task answered ACCEPTED runs exactly once, every refused one never runs and was told
why in one clear error.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq

import zq
from tests.apps import faults
from tests.conftest import wait_until
from tests.test_faults import faults_cluster, kill_router, run_counts, spawned_children
from tests.test_unit_journal import on_disk
from zq import protocol
from zq.protocol import Cmd, Message
from zq.router import Router, RouterConfig
from zq.testing import Process


@pytest.fixture(autouse=True)
def confirmed_sends() -> Iterator[None]:
    """These tests count what the router refused, task by task, as it answers: each send
    waits for its answer (publish_confirm). Sending without waiting is tested in
    tests/test_faults_pipelined.py."""
    faults.app.conf.update(publish_confirm=True)
    try:
        yield
    finally:
        faults.app.conf.update(publish_confirm=False)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

app = faults.app
NO_SPACE = re.compile(r"journal \S+/data/journal\.log: No space left on device")


# -- a small file system, mounted and filled ---------------------------------------------


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(command, 127, "", str(exc))


@contextmanager
def tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created) for the block."""
    if not sys.platform.startswith("linux"):
        pytest.skip("a tmpfs data dir needs Linux")
    path.mkdir(parents=True, exist_ok=True)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root, as on CI): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


def fill(directory: Path) -> Path:
    """Write a filler file until the file system has no room left."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


# -- clients that submit while the disk fills --------------------------------------------


class Outcomes:
    """What the router answered each submit: accepted ids, refused ids with the error."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[str] = []
        self.refused: dict[str, str] = {}
        self.other: list[tuple[str, BaseException]] = []

    def submit(self, log: Path) -> bool:
        task_id = f"disk-{uuid.uuid4()}"
        try:
            faults.quick.apply_async(args=(str(log), task_id), task_id=task_id)
        except zq.PublishError as exc:
            with self.lock:
                self.refused[task_id] = str(exc)
            return False
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            with self.lock:
                self.other.append((task_id, exc))
            return False
        with self.lock:
            self.accepted.append(task_id)
        return True


def submit_while(outcomes: Outcomes, log: Path, clients: int, stop: threading.Event) -> list[
        threading.Thread]:
    def client() -> None:
        try:
            while not stop.is_set():
                outcomes.submit(log)
        finally:
            app.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def wait_until_refused(outcomes: Outcomes, timeout_s: float = 20.0) -> None:
    wait_until(lambda: outcomes.refused, timeout_s, "a task to be refused")


def check_counts(log: Path, outcomes: Outcomes) -> Counter[str]:
    """Every accepted task ran exactly once, every refused one never, with a clear error."""
    assert outcomes.other == []
    wait_until(lambda: set(outcomes.accepted) <= set(run_counts(log)), 60,
               "every accepted task to run")
    counts = run_counts(log)
    assert {i: n for i, n in counts.items() if i in outcomes.accepted and n != 1} == {}
    assert [i for i in outcomes.refused if i in counts] == []
    for message in outcomes.refused.values():
        assert NO_SPACE.search(message), message
    return counts


def full_disk_test(tmp_path: Path, results: str, *router_args: str, size: str = "2m") -> None:
    log = tmp_path / "runs.log"
    cluster_dir = tmp_path / "cluster"
    with tmpfs(cluster_dir / "data", size) as data, \
            faults_cluster(cluster_dir, concurrency=2,
                           router_args=["--results", results, *router_args]) as cluster:
        assert cluster.router_process is not None
        router_pid = cluster.router_process.pid
        outcomes = Outcomes()
        stop = threading.Event()
        threads = submit_while(outcomes, log, clients=3, stop=stop)
        try:
            wait_until(lambda: len(outcomes.accepted) >= 300, 30, "tasks to be accepted")
            filler = fill(data)
            before_full = len(outcomes.accepted)
            wait_until_refused(outcomes)
            time.sleep(2)  # refusing, and retrying the journal, while clients keep sending
            while_full = len(outcomes.accepted) - before_full
            filler.unlink()
            wait_until(lambda: len(outcomes.accepted) >= before_full + while_full + 300, 30,
                       "tasks to be accepted again once there is room")
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        counts = check_counts(log, outcomes)
        after = faults.quick.delay(str(log), "after")
        assert after.get(timeout=15) == "after"
        assert cluster.router_process.alive() and cluster.router_process.pid == router_pid
        assert cluster.stats()["journal"]["failure"] is None
        router_log = cluster.router_process.log()
        changes = router_log.count("refusing new tasks until it can be written")
        assert 1 <= changes < len(outcomes.refused)  # logged per change, not per task
        dropped = router_log.count("dropping the state of")
        if results == "memory":
            assert "Traceback" not in router_log
        # Every accepted task's result, including those the results store refused while
        # the disk was full: the router keeps them and sends them again once stored is
        # not confirmed.
        deadline = time.monotonic() + 60
        missing = [i for i in outcomes.accepted
                   if app.AsyncResult(i).get(timeout=max(0.1, deadline - time.monotonic()))
                   != i]
        assert missing == []
        print(f"\nfull disk, {' '.join(['--results', results, *router_args])}: {len(outcomes.accepted)} accepted "
              f"({before_full} before the disk filled, about {while_full} while full), "
              f"{len(outcomes.refused)} refused, none of those ran, "
              f"{sum(1 for i in outcomes.accepted if counts[i] > 1)} run twice; "
              f"{changes} times refusing; {dropped} states dropped by the results store")


def test_full_disk_refuses_tasks_clearly_and_every_accepted_task_runs_once(tmp_path):
    full_disk_test(tmp_path, "memory")


def test_full_disk_with_the_sqlite_results_store(tmp_path):
    # Room for SQLite's write-ahead log to grow back once the filler is gone, or it takes
    # all of it and the journal is full again.
    full_disk_test(tmp_path, "sqlite", size="32m")


def test_full_disk_with_journal_fsync(tmp_path):
    full_disk_test(tmp_path, "memory", "--journal-fsync")


def test_teardown_after_a_failed_write_answers_no_task_accepted(tmp_path):
    """Tasks read in the router's last moments, when the journal cannot be written: they
    are refused, not answered ACCEPTED on the way out."""
    config = RouterConfig(bind=f"ipc://{tmp_path / 'router.sock'}", data_dir=tmp_path / "data",
                          results_backend="memory")
    router = Router(config)
    router.setup()
    ctx = zmq.Context()
    client = ctx.socket(zmq.DEALER)
    client.linger = 0
    try:
        client.connect(router.endpoint)
        disk = on_disk(router.journal, room=0)
        protocol.send(client, Message(Cmd.SUBMIT, {"id": "last", "task": "t", "ct": "x",
                                                   "queue": "celery"}, b""))
        wait_until(lambda: router._drain(), 10, "the router to read the task")
    finally:
        router.teardown()
        disk.real.close()
    try:
        assert client.poll(5000)
        _, reply = protocol.recv(client)
        assert reply.cmd is Cmd.ERROR and reply.header["error"] == "PublishError"
        assert reply.header["message"] == \
            f"journal {tmp_path / 'data' / 'journal.log'}: No space left on device"
    finally:
        client.close()
        ctx.term()


def test_router_restarted_while_the_disk_is_full_starts_refuses_and_recovers(tmp_path):
    log = tmp_path / "runs.log"
    cluster_dir = tmp_path / "cluster"
    with tmpfs(cluster_dir / "data") as data, \
            faults_cluster(cluster_dir, concurrency=1, start_workers=False,
                           router_args=["--results", "memory"]) as cluster:
        queued = [faults.quick.delay(str(log), i).id for i in range(5)]
        filler = fill(data)
        kill_router(cluster)
        cluster.start_router()  # starts: it answers stats
        stats = cluster.stats()
        assert stats["tasks"] == 5
        assert NO_SPACE.search(stats["journal"]["failure"])  # no room to rewrite the journal
        # The file's last page may still take a record or two: then those are accepted.
        outcomes = Outcomes()
        for _ in range(200):
            if not outcomes.submit(log):
                break
        assert outcomes.other == [] and len(outcomes.refused) == 1
        [message] = outcomes.refused.values()
        assert NO_SPACE.search(message), message
        queued += outcomes.accepted
        filler.unlink()
        time.sleep(1.5)  # the router's next try of the journal is due
        later = faults.quick.delay(str(log), "later")
        cluster.start_workers()
        assert later.get(timeout=15) == "later"
        wait_until(lambda: set(queued) <= set(run_counts(log)), 15, "the queued tasks")
        counts = run_counts(log)
        assert [counts[i] for i in queued] == [1] * len(queued)
        assert sum(counts.values()) == len(queued) + 1  # the refused one never ran
        assert "Traceback" not in cluster.logs()


# -- a data dir the router cannot use ----------------------------------------------------


def start_router(tmp_path: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zq", "router", "--bind", f"ipc://{tmp_path / 'r.sock'}",
         "--data-dir", str(data_dir), *extra], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()),
                                                          os.environ.get("PYTHONPATH", "")])})


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Aborted" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("zq router: ")
    return lines[0]


@pytest.mark.parametrize("results", ["sqlite", "memory"])
def test_read_only_data_dir_is_one_line_and_a_non_zero_exit(tmp_path, results):
    data = tmp_path / "data"
    with tmpfs(data, size="1m"):
        (data / "journal.log").write_bytes(b"")  # a router ran here before
        remounted = _run("mount", "-o", "remount,ro", str(data))
        assert remounted.returncode == 0, remounted.stderr
        line = one_line(start_router(tmp_path, data, "--results", results))
        assert line == f"zq router: data dir {data} is read-only (its file system is mounted " \
                       f"read-only)"


def test_data_dir_under_a_missing_parent_is_one_line_and_a_non_zero_exit(tmp_path):
    data = tmp_path / "missing" / "data"
    line = one_line(start_router(tmp_path, data))
    assert line == f"zq router: data dir {data} cannot be created: {data.parent} does not exist"
    assert not data.parent.exists()


def test_data_dir_that_is_a_file_is_one_line_and_a_non_zero_exit(tmp_path):
    data = tmp_path / "data"
    data.write_text("not a directory")
    assert one_line(start_router(tmp_path, data)) == \
        f"zq router: data dir {data} is not a directory"


# -- one router per data dir -------------------------------------------------------------


def test_second_router_on_a_data_dir_in_use_exits_at_once_and_the_first_keeps_its_journal(
        tmp_path):
    log = tmp_path / "runs.log"
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False) as cluster:
        first = cluster.router_process
        queued = [faults.quick.delay(str(log), i).id for i in range(5)]
        started = time.monotonic()
        done = start_router(tmp_path, cluster.data_dir)
        assert time.monotonic() - started < 15
        line = one_line(done)
        assert f"data dir {cluster.data_dir} is in use by another router (PID {first.pid}" \
               in line
        assert first.alive()
        queued.append(faults.quick.delay(str(log), 5).id)  # the first one still works
        kill_router(cluster)
        cluster.start_router()
        assert cluster.stats()["tasks"] == 6  # its journal was left alone
        cluster.start_workers()
        wait_until(lambda: set(queued) <= set(run_counts(log)), 15, "the queued tasks")
        assert sorted(run_counts(log).values()) == [1] * 6


def test_router_lock_is_not_held_by_the_results_actor_and_a_kill_releases_it(tmp_path):
    """The lock dies with the router's process even when its results actor lives on."""
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False) as cluster:
        router = cluster.router_process
        assert router is not None
        try:
            lock = cluster.data_dir / "router.lock"
            assert lock.read_text().strip() == str(router.pid)
            children = wait_until(lambda: spawned_children(router.pid), 10,
                                  "the results actor")
            for pid in children:
                held = [os.readlink(f"/proc/{pid}/fd/{fd}")
                        for fd in os.listdir(f"/proc/{pid}/fd")]
                assert str(lock) not in held
            os.kill(router.pid, signal.SIGKILL)  # the PID alone: its results actor lives on
            router.popen.wait(10)
            restarted: Process = cluster.start_router()
            assert lock.read_text().strip() == str(restarted.pid)
            result = faults.quick.delay(str(tmp_path / "runs.log"), "ok")
            cluster.start_workers()
            assert result.get(timeout=15) == "ok"
        finally:
            router.stop()  # its process group: the results actor it left behind
