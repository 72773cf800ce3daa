"""Every ``zq`` command fails with one line on stderr and a non-zero exit (issue 12).

Each test runs the real command (``python -m zq``) as a subprocess, on ports picked free
by the OS or ipc:// paths under ``tmp_path``, and stops every process it starts by PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import zmq.auth

from tests.conftest import wait_until
from zq import App, security
from zq._address import IPC_PATH_MAX, check_endpoint
from zq.errors import ConfigurationError
from zq.router import children
from zq.router.config import RESULTS_IPC_SUFFIX
from zq.testing import Cluster, Process

REPO = Path(__file__).resolve().parent.parent
BASIC = "tests.apps.basic"
# Far above what a refusal takes (about a second and a half); only a hang fails it.
PROMPTLY_S = 8.0


def zq_env(**extra: str) -> dict[str, str]:
    """The environment of a ``zq`` subprocess: this checkout's zq, no $ZQ_ROUTER."""
    env = {k: v for k, v in os.environ.items() if k != "ZQ_ROUTER"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def zq(*args: str, env: dict[str, str] | None = None, timeout_s: float = 30,
       **options) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zq", *args], cwd=REPO,
                          env=env or zq_env(), capture_output=True, text=True,
                          timeout=timeout_s, **options)


def one_line(done: subprocess.CompletedProcess[str], status: int, command: str) -> str:
    """The one line a failed command printed, checked to be that and only that."""
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and "Aborted" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"zq {command}: "), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ipc_path(directory: Path, size: int) -> str:
    """A path under ``directory`` of exactly ``size`` bytes."""
    base = f"{directory}/"
    assert len(base) < size - 1, "tmp_path is too long for this test"
    return base + "r" * (size - len(base))


# -- 1. one handler: one line and a status, for every command ------------------------------


def test_an_os_error_is_one_line_naming_the_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line(zq("keys", "generate", str(blocker / "keys")), 1, "keys generate")
    assert line == f"zq keys generate: Not a directory: {blocker / 'keys'}"


def test_a_failed_task_is_one_line(cluster):
    done = zq("call", f"{BASIC}.fail", "--args", '["bad"]', "--wait", "--timeout", "20",
              "--router", cluster.router)
    line = one_line(done, 1, "call")
    assert line.endswith("failed: ValueError: bad")


def test_usage_errors_keep_clicks_usage_and_status_2():
    done = zq("call")
    assert done.returncode == 2
    assert "Usage:" in done.stderr and "Missing argument 'NAME'" in done.stderr


# -- 2. no router: said within a second or two, not after the 10 s request timeout ---------


@pytest.mark.parametrize("command, args", [
    ("purge", ["purge"]),
    ("call", ["call", f"{BASIC}.add", "--args", "[1, 2]"]),
    ("call", ["call", f"{BASIC}.add", "--args", "[1, 2]", "--wait"]),
    ("result", ["result", "some-task-id"]),
    ("inspect stats", ["inspect", "stats"]),
    ("watch", ["watch"]),
])
def test_no_router_listening_is_said_at_once(command, args):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = zq(*args, "--router", endpoint)
    took_s = time.monotonic() - started
    line = one_line(done, 1, command)
    assert f"no router answers at {endpoint}" in line
    assert took_s < PROMPTLY_S


def test_no_router_on_an_ipc_path_is_said_at_once(tmp_path):
    started = time.monotonic()
    done = zq("inspect", "stats", "--router", f"ipc://{tmp_path}/nobody.sock")
    assert "no router answers at ipc://" in one_line(done, 1, "inspect stats")
    assert time.monotonic() - started < PROMPTLY_S


# -- 3. addresses checked before anything starts, with a hint ------------------------------


@pytest.mark.parametrize("endpoint, hint", [
    ("127.0.0.1:5555", "did you mean tcp://127.0.0.1:5555?"),
    ("localhost:7000", "did you mean tcp://localhost:7000?"),
    ("/tmp/zq.sock", "did you mean ipc:///tmp/zq.sock?"),
    ("tcp://127.0.0.1", "has no port"),
    ("tcp://127.0.0.1:99999", "port 99999 is out of range (1-65535)"),
    ("tcp://127.0.0.1:0", "no router listens on port 0"),
    ("tcp://*:5555", "'*' is for binding"),
    ("http://127.0.0.1:5555", "zq talks over tcp:// or ipc://"),
])
def test_a_client_refuses_a_bad_address_with_a_hint(endpoint, hint):
    line = one_line(zq("call", f"{BASIC}.add", "--router", endpoint), 2, "call")
    assert hint in line


def test_workers_refuse_a_bad_address_before_starting(tmp_path):
    done = zq("workers", "-A", BASIC, "-n", "1", "--router", "127.0.0.1:5555")
    assert "did you mean tcp://127.0.0.1:5555?" in one_line(done, 2, "workers")


@pytest.mark.parametrize("port, hint", [
    ("0", "port 0 lets the OS pick a port, which clients and workers could not find"),
    ("*", "port * lets the OS pick a port"),
    ("99999", "port 99999 is out of range"),
])
def test_router_refuses_a_port_clients_could_not_reach(tmp_path, port, hint):
    data = tmp_path / "data"
    done = zq("router", "--bind", f"tcp://127.0.0.1:{port}", "--data-dir", str(data))
    assert hint in one_line(done, 2, "router")
    assert not data.exists()  # refused before anything started


def test_an_ipc_path_longer_than_the_os_allows_is_refused(tmp_path):
    too_long = ipc_path(tmp_path, IPC_PATH_MAX + 1)
    line = one_line(zq("inspect", "stats", "--router", f"ipc://{too_long}"), 2,
                    "inspect stats")
    assert f"longer than the {IPC_PATH_MAX} a Unix socket path holds" in line


def test_router_ipc_path_leaves_room_for_the_results_actor(tmp_path):
    data = tmp_path / "data"
    path = ipc_path(tmp_path, IPC_PATH_MAX - RESULTS_IPC_SUFFIX + 1)
    done = zq("router", "--bind", f"ipc://{path}", "--data-dir", str(data))
    line = one_line(done, 2, "router")
    assert f"use a path of at most {IPC_PATH_MAX - RESULTS_IPC_SUFFIX} bytes" in line
    assert not data.exists()


def test_router_on_the_longest_ipc_path_allowed_works_with_its_results_actor(tmp_path):
    endpoint = f"ipc://{ipc_path(tmp_path, IPC_PATH_MAX - RESULTS_IPC_SUFFIX)}"
    router = Process("router", ["router", "--bind", endpoint, "--data-dir",
                                str(tmp_path / "data")], tmp_path / "router.log", zq_env(),
                     REPO)
    try:
        wait_until(lambda: zq("inspect", "stats", "--router", endpoint).returncode == 0,
                   30, "the router to answer")
        done = zq("result", "never-sent", "--router", endpoint)  # asks the results actor
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "PENDING"
    finally:
        router.stop()


def test_the_results_suffix_room_is_the_longest_suffix_the_results_actor_adds():
    assert RESULTS_IPC_SUFFIX == max(len(f".results-{role}") for role in children._ROLES)


@pytest.mark.parametrize("endpoint, options", [
    ("tcp://127.0.0.1:5555", {}), ("tcp://[::1]:5555", {}), ("tcp://*:5555", {"bind": True}),
    ("tcp://eth0:5555", {"bind": True}), ("ipc:///tmp/zq.sock", {}),
    ("ipc://relative.sock", {"bind": True, "room": 15}),
])
def test_addresses_zq_can_use_pass_unchanged(endpoint, options):
    assert check_endpoint(endpoint, **options) == endpoint


def test_an_app_refuses_a_bad_router_address_when_made():
    with pytest.raises(ConfigurationError, match="did you mean tcp://127.0.0.1:5555"):
        App("x", router="127.0.0.1:5555")


# -- 4. a router that cannot start: one line, status 2, nothing left running ---------------


def _session(pid: int) -> list[psutil.Process]:
    """Processes started by ``pid`` (its children, or members of the session it led)."""
    found = []
    for proc in psutil.process_iter(["ppid"]):
        try:
            if proc.info["ppid"] == pid or os.getsid(proc.pid) == pid:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def run_router(tmp_path: Path, *args: str, prefix: tuple[str, ...] = ()
               ) -> subprocess.CompletedProcess[str]:
    """``zq router ARGS`` in a session of its own; fails if anything it started outlives
    it (a results actor, or multiprocessing's resource tracker, left behind)."""
    command = [*prefix, sys.executable, "-m", "zq", "router", *args]
    with subprocess.Popen(command, cwd=REPO, env=zq_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        try:
            # Children notice their parent's exit within a moment; a loose bound.
            wait_until(lambda: not _session(proc.pid), 10, "the router's children to exit")
        finally:
            for left in _session(proc.pid):
                left.kill()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_router_on_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        done = run_router(tmp_path, "--bind", endpoint, "--data-dir", str(tmp_path / "data"))
    assert one_line(done, 2, "router") == (
        f"zq router: cannot listen on {endpoint}: the address is in use (another router, "
        f"or another program, holds it)")


def test_router_on_a_data_dir_that_is_a_file(tmp_path):
    data = tmp_path / "data"
    data.write_text("")
    done = run_router(tmp_path, "--bind", f"ipc://{tmp_path}/r.sock", "--data-dir", str(data))
    assert one_line(done, 2, "router") == f"zq router: data dir {data} is not a directory"


def test_router_on_a_data_dir_it_cannot_write(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o500)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # Root writes anywhere; without these capabilities it obeys the mode like others.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and setpriv is missing to drop CAP_DAC_OVERRIDE")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--")
    try:
        done = run_router(tmp_path, "--bind", f"ipc://{tmp_path}/r.sock", "--data-dir",
                          str(data), prefix=prefix)
    finally:
        data.chmod(0o700)
    assert one_line(done, 2, "router") == \
        f"zq router: data dir {data} is not writable: permission denied"


def test_router_that_fails_after_starting_its_results_actor_leaves_nothing(tmp_path):
    data = tmp_path / "data"
    (data / "journal.log").mkdir(parents=True)  # opened only once the results actor runs
    done = run_router(tmp_path, "--bind", f"ipc://{tmp_path}/r.sock", "--data-dir", str(data))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == \
        f"zq router: journal {data / 'journal.log'}: Is a directory"


# -- 5. Ctrl-C during ``zq call --wait``: the task id, and status 130 ----------------------


@pytest.fixture
def lone_router(tmp_path: Path) -> Iterator[Cluster]:
    """A router with no workers."""
    with Cluster(tmp_path / "cluster", env=zq_env(), cwd=REPO) as cluster:
        yield cluster


def test_ctrl_c_during_call_wait_prints_the_task_id(lone_router):
    queue = "nobody-consumes"
    command = [sys.executable, "-m", "zq", "call", f"{BASIC}.add", "--args", "[1, 2]",
               "--queue", queue, "--wait", "--router", lone_router.router]
    with subprocess.Popen(command, cwd=REPO, env=zq_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as caller:
        try:
            lone_router.wait_for(lambda s: s["queued"].get(queue) == 1, "the task queued")
            caller.send_signal(signal.SIGINT)
            out, err = caller.communicate(timeout=20)
        finally:
            caller.kill()
    assert caller.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err, err
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(r"zq call: interrupted; task (\S+) was sent and may still run: "
                         r"`zq result \1` shows it", last)
    assert found, last
    # It is the id of the task waiting in the queue: revoking it ends that task.
    client = App("revoker", router=lone_router.router)
    try:
        client.control.revoke(found.group(1))
        assert client.AsyncResult(found.group(1)).get(timeout=10, propagate=False) is not None
        assert client.AsyncResult(found.group(1)).state == "REVOKED"
        assert lone_router.stats()["queued"].get(queue) is None
    finally:
        client.close()


# -- 6. ``zq router --bind`` from $ZQ_ROUTER -----------------------------------------------


def test_router_binds_zq_router_when_no_bind_is_given(tmp_path):
    endpoint = f"ipc://{tmp_path}/from-env.sock"
    router = Process("router", ["router", "--data-dir", str(tmp_path / "data")],
                     tmp_path / "router.log", zq_env(ZQ_ROUTER=endpoint), REPO)
    try:
        wait_until(lambda: zq("inspect", "stats", "--router", endpoint).returncode == 0,
                   30, "the router to answer at $ZQ_ROUTER")
    finally:
        assert router.stop() == 0, router.log()
    assert f"listening on {endpoint}" in router.log()


# -- 7. ``zq keys generate`` ---------------------------------------------------------------


def test_keys_generate_refuses_to_overwrite_without_force(tmp_path):
    keys = tmp_path / "keys"
    assert zq("keys", "generate", str(keys)).returncode == 0
    before = zmq.auth.load_certificate(keys / "router.key_secret")
    line = one_line(zq("keys", "generate", str(keys), "--name", "other", "--name", "router"),
                    2, "keys generate")
    assert line.startswith(f"zq keys generate: {keys / 'router.key'} exists already: pass "
                           f"--force")
    assert zmq.auth.load_certificate(keys / "router.key_secret") == before
    assert not (keys / "other.key").exists()  # nothing written when one pair is refused
    done = zq("keys", "generate", str(keys), "--name", "router", "--force")
    assert done.returncode == 0, done.stderr
    after = zmq.auth.load_certificate(keys / "router.key_secret")
    assert after != before
    assert zmq.auth.load_certificate(keys / "router.key")[0] == after[0]
    assert stat.S_IMODE((keys / "router.key_secret").stat().st_mode) == 0o600
    assert sorted(p.name for p in keys.iterdir()) == [
        "client.key", "client.key_secret", "router.key", "router.key_secret"]


@pytest.mark.parametrize("name", ["../evil", "sub/name", ".hidden", ""])
def test_keys_generate_refuses_a_name_that_is_not_a_plain_file_name(tmp_path, name):
    keys = tmp_path / "deep" / "keys"
    line = one_line(zq("keys", "generate", str(keys), "--name", name), 2, "keys generate")
    assert f"key name {name!r} refused" in line
    assert not (tmp_path / "deep").exists() and not (tmp_path / "evil.key").exists()


def test_keys_generate_makes_the_secret_key_0600_even_under_umask_0(tmp_path):
    keys = tmp_path / "keys"
    done = zq("keys", "generate", str(keys), "--name", "host", umask=0)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((keys / "host.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "host.key").stat().st_mode) == 0o644


def test_keys_generate_never_changes_a_mode_after_creating_a_file(tmp_path, monkeypatch):
    """The secret key is created 0600, not made so afterwards: no chmod to race."""
    def refuse(*args, **kwargs):
        raise AssertionError("chmod called")

    monkeypatch.setattr(os, "chmod", refuse)
    monkeypatch.setattr(Path, "chmod", refuse)
    [(public, secret)] = security.generate(tmp_path, ["host"])
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert zmq.auth.load_certificate(secret)[0] == zmq.auth.load_certificate(public)[0]


# -- 8. ``zq workers -c`` and ``--prefetch`` -----------------------------------------------


def test_workers_take_celerys_c_for_concurrency(cluster, tmp_path):
    before = cluster.actor_count()
    queue = "dash-c"
    workers = Process("workers", ["workers", "-A", BASIC, "-c", "1", "-Q", queue,
                                  "--router", cluster.router], tmp_path / "workers.log",
                      cluster.env, REPO)
    try:
        cluster.wait_for(lambda s: s["actors"] == before + 1, "one more actor", workers)
        done = zq("call", f"{BASIC}.add", "--args", "[2, 2]", "--queue", queue, "--wait",
                  "--timeout", "20", "--router", cluster.router)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "4"
    finally:
        workers.stop()


def test_workers_help_says_what_prefetch_does():
    done = zq("workers", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "-c, -n, --concurrency" in text
    assert "Tasks each actor process may hold: the one it runs plus those reserved for it" \
        in text
    assert "-Ofair" in text


# -- 9. ``zq call --wait`` for a task nothing will take ------------------------------------


def _hint(caller: subprocess.Popen[str]) -> str:
    """The first line the caller prints to stderr (read until it comes)."""
    assert caller.stderr is not None
    return caller.stderr.readline().strip()


def test_call_wait_says_when_no_worker_is_connected(lone_router):
    command = [sys.executable, "-m", "zq", "call", "no.such.task", "--wait",
               "--router", lone_router.router]
    with subprocess.Popen(command, cwd=REPO, env=zq_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as caller:
        try:
            line = _hint(caller)
            assert caller.poll() is None  # still waiting, as asked
        finally:
            caller.kill()
    assert re.fullmatch(r"zq call: task \S+ waits in queue 'celery': no worker is connected "
                        r"to the router \(start `zq workers`\)", line), line


@pytest.mark.timeout(120)
def test_call_wait_says_when_the_workers_consume_other_queues(tmp_path):
    with Cluster(tmp_path / "cluster", app=BASIC, concurrency=1, env=zq_env(), cwd=REPO,
                 workers_args=["-Q", "elsewhere"]) as cluster:
        command = [sys.executable, "-m", "zq", "call", f"{BASIC}.add", "--args", "[1, 1]",
                   "--wait", "--router", cluster.router]
        with subprocess.Popen(command, cwd=REPO, env=zq_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as caller:
            try:
                line = _hint(caller)
            finally:
                caller.kill()
    assert re.fullmatch(r"zq call: task \S+ waits in queue 'celery': no worker seems to "
                        r"consume it \(is the name right\? pass -A APP to route it as its "
                        r"app does, or --queue\)", line), line


@pytest.mark.timeout(120)
def test_call_wait_gives_no_hint_while_the_workers_are_busy(tmp_path):
    gate = tmp_path / "gate"
    with Cluster(tmp_path / "cluster", app=BASIC, concurrency=1, env=zq_env(),
                 cwd=REPO) as cluster:
        client = App("busy", router=cluster.router)
        try:
            client.send_task(f"{BASIC}.wait_for_file", [str(gate)])
            cluster.wait_for(lambda s: s["inflight"] == 1, "the actor to be busy")
            command = [sys.executable, "-m", "zq", "call", f"{BASIC}.add", "--args", "[1, 1]",
                       "--wait", "--timeout", "60", "--router", cluster.router]
            with subprocess.Popen(command, cwd=REPO, env=zq_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) as caller:
                try:
                    cluster.wait_for(lambda s: s["queued"].get("celery") == 1,
                                     "the call's task queued")
                    # Long enough for the caller to look at the queue a few times.
                    time.sleep(3 * 2.0)
                    gate.touch()
                    out, err = caller.communicate(timeout=30)
                finally:
                    caller.kill()
        finally:
            gate.touch()
            client.close()
    assert caller.returncode == 0, err
    assert out.strip() == "2"
    assert err == ""
