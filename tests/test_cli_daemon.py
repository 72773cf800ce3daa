"""``--logfile``, ``--pidfile`` and ``--detach`` on ``zq router`` and ``zq workers``, run as
real commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_until
from zq.testing import Cluster

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def _zq(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zq", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=30, **kwargs)


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        psutil.Process(pid).wait(15)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)


def test_a_detached_router_writes_its_pid_and_logs_and_a_second_one_is_refused(
        tmp_path: Path):
    endpoint = f"ipc://{tmp_path}/r.sock"
    pidfile, logfile = tmp_path / "router.pid", tmp_path / "router.log"
    started = _zq("router", "--bind", endpoint, "--data-dir", str(tmp_path / "data"),
                  "--detach", "--logfile", str(logfile), "--pidfile", str(pidfile))
    assert started.returncode == 0, started.stderr
    pid = wait_until(lambda: pidfile.exists() and int(pidfile.read_text() or 0), 10,
                     "the pid file")
    try:
        # In a session of its own, away from this terminal's.
        assert os.getsid(pid) != os.getsid(0)
        wait_until(lambda: "listening on" in logfile.read_text(), 10, "the router's log")
        again = _zq("router", "--bind", f"ipc://{tmp_path}/r2.sock", "--data-dir",
                    str(tmp_path / "data2"), "--pidfile", str(pidfile))
        assert again.returncode == 2
        assert f"process {pid} is running" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        _stop(pid)
    wait_until(lambda: not pidfile.exists(), 10, "the pid file to be removed")


def test_workers_log_their_banner_and_tasks_to_the_log_file(tmp_path: Path):
    logfile = tmp_path / "workers.log"
    with Cluster(tmp_path / "c", app="tests.apps.basic", concurrency=1,
                 workers_args=["--logfile", str(logfile)]) as cluster:
        from tests.apps import basic
        basic.app.close()
        basic.app.conf.update(router=cluster.router)
        try:
            result = basic.add.delay(2, 3)
            assert result.get(timeout=10) == 5
        finally:
            basic.app.close()
        wait_until(lambda: f"[{result.id}] succeeded in" in logfile.read_text(), 10,
                   "the task's line in the log file")
    text = logfile.read_text()
    assert "[tasks]" in text and "  . tests.apps.basic.add" in text
    assert f"Task tests.apps.basic.add[{result.id}] received" in text


def test_a_stale_pid_file_is_replaced(tmp_path: Path):
    pidfile = tmp_path / "workers.pid"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    with Cluster(tmp_path / "c", app="tests.apps.basic", concurrency=1,
                 workers_args=["--pidfile", str(pidfile)]) as cluster:
        assert int(pidfile.read_text()) == cluster.workers[0].pid
    wait_until(lambda: not pidfile.exists(), 10, "the pid file to be removed")


def _free_ports(count: int) -> list[int]:
    import socket
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class _FixedPortsCluster(Cluster):
    def __init__(self, directory: Path, router_port: int, **kwargs):
        super().__init__(directory, **kwargs)
        self.router = f"tcp://127.0.0.1:{router_port}"


def test_a_router_on_tcp_binds_the_results_actor_on_the_ports_it_is_given(tmp_path: Path):
    from tests.apps import basic
    from zq.protocol import Cmd

    router_port, *ports = _free_ports(4)
    with _FixedPortsCluster(tmp_path / "c", router_port, app="tests.apps.basic",
                            concurrency=1,
                            router_args=["--results-ports", ",".join(map(str, ports))]) as c:
        basic.app.close()
        basic.app.conf.update(router=c.router)
        try:
            welcome = basic.app.router_client().call(Cmd.HELLO, {}, 10)
            assert basic.add.delay(1, 2).get(timeout=10) == 3
        finally:
            basic.app.close()
    assert [welcome["results"][role] for role in ("ingest", "query", "pub")] == [
        f"tcp://127.0.0.1:{port}" for port in ports]


@pytest.mark.parametrize("value, message", [
    ("5556,5557", "three ports"), ("a,b,c", "three ports"), ("5556,5556,5557", "different"),
    ("0,1,2", "1-65535")])
def test_bad_results_ports_are_refused_in_one_line(tmp_path: Path, value, message):
    done = _zq("router", "--bind", "tcp://127.0.0.1:5999", "--data-dir", str(tmp_path / "d"),
               "--results-ports", value)
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr
