"""Start a real zq cluster for tests: a router and worker processes on ipc:// endpoints.

    with Cluster(tmp_path, app="myproj.tasks", concurrency=2) as cluster:
        app = App(router=cluster.router)
        assert add.delay(2, 3).get(timeout=10) == 5

Every process is started with ``python -m zq`` exactly as an operator would, stopped by
its PID when the block ends, and its log is kept under the cluster's directory.
"""

from __future__ import annotations

import os
import signal as signals
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import zmq

from . import protocol
from .protocol import Cmd, Message
from .security import ClientKeys, secure_client


class ClusterError(RuntimeError):
    pass


class Process:
    """One started process (``zq`` with ``args``, unless a whole ``command`` is given): its
    Popen, its log file, and how to stop it. It leads a session of its own, so that its
    children are stopped with it. With ``pipes`` its stdin and stdout are pipes to talk
    to it through, and only its stderr goes to the log."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: dict[str, str],
                 cwd: Path | str | None = None, *, command: Sequence[str] | None = None,
                 pipes: bool = False):
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            list(command) if command is not None else [sys.executable, "-m", "zq", *args],
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log,
            stderr=self._log if pipes else subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def kill_group(self, signum: int = signals.SIGKILL) -> None:
        """Signal the process and every child it started (a whole worker host)."""
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL to the whole group if it has not exited in ``timeout_s``."""
        if self.alive():
            self.signal(signals.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group(signals.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()
        self._log.close()
        return self.popen.returncode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


class Cluster:
    """A router and zero or more ``zq workers`` processes, started and stopped together."""

    def __init__(self, directory: Path | str, app: str | None = None, concurrency: int = 2,
                 workers_args: Sequence[str] = (), router_args: Sequence[str] = (),
                 start_workers: bool = True, ready_timeout_s: float = 30.0,
                 env: dict[str, str] | None = None, cwd: Path | str | None = None,
                 client_keys: ClientKeys | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.router = f"ipc://{self.dir / 'router.sock'}"
        self.data_dir = self.dir / "data"
        self.app = app
        self.concurrency = concurrency
        self.workers_args = list(workers_args)
        self.router_args = list(router_args)
        self.start_workers_on_enter = start_workers and app is not None
        self.ready_timeout_s = ready_timeout_s
        # The keys this cluster's own questions to a CURVE router are asked with.
        self.client_keys = client_keys
        self.cwd = Path(cwd) if cwd else None
        self.env = {**os.environ, **(env or {}), "ZQ_ROUTER": self.router}
        pythonpath = [str(Path.cwd())]
        if self.env.get("PYTHONPATH"):
            pythonpath.append(self.env["PYTHONPATH"])
        self.env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        self.router_process: Process | None = None
        self.workers: list[Process] = []
        self._logs = 0

    def __enter__(self) -> Cluster:
        try:
            self.start_router()
            if self.start_workers_on_enter:
                self.start_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _log_path(self, name: str) -> Path:
        self._logs += 1
        return self.dir / f"{self._logs:02d}-{name}.log"

    def start_router(self, *extra: str) -> Process:
        args = ["router", "--bind", self.router, "--data-dir", str(self.data_dir),
                *self.router_args, *extra]
        self.router_process = Process("router", args, self._log_path("router"), self.env,
                                      self.cwd)
        self.wait_for(lambda s: True, what="the router to answer")
        return self.router_process

    def start_workers(self, *extra: str, concurrency: int | None = None,
                      wait: bool = True) -> Process:
        if self.app is None:
            raise ClusterError("no app module given for the workers")
        n = concurrency or self.concurrency
        expected = self.actor_count() + n if wait else 0
        args = ["workers", "-A", self.app, "-n", str(n), "--router", self.router,
                *self.workers_args, *extra]
        process = Process("workers", args, self._log_path("workers"), self.env, self.cwd)
        self.workers.append(process)
        if wait:
            self.wait_for(lambda s: s["actors"] >= expected,
                          what=f"{expected} actors to be ready", process=process)
        return process

    def stats(self, timeout_s: float = 2.0) -> dict[str, Any] | None:
        """The router's stats, or None when it does not answer in time."""
        ctx: zmq.Context[Any] = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        secure_client(sock, self.client_keys)
        try:
            sock.connect(self.router)
            protocol.send(sock, Message(Cmd.CONTROL, {"op": "stats", "rid": 0}))
            if not sock.poll(timeout_s * 1000):
                return None
            _, reply = protocol.recv(sock)
            return reply.header
        finally:
            sock.close()

    def actor_count(self) -> int:
        stats = self.stats()
        return int(stats["actors"]) if stats else 0

    def wait_for(self, predicate: Any, what: str, process: Process | None = None,
                 timeout_s: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        while time.monotonic() < deadline:
            for p in (self.router_process, process):
                if p is not None and not p.alive():
                    raise ClusterError(f"{p.name} exited with {p.popen.returncode} while "
                                       f"waiting for {what}:\n{p.log()[-4000:]}")
            stats = self.stats(0.5)
            if stats is not None and predicate(stats):
                return stats
            time.sleep(0.05)
        raise ClusterError(f"timed out waiting for {what}")

    def restart_router(self, signum: int = signals.SIGKILL) -> Process:
        """Stop the router (by default with SIGKILL, as a crash) and start it again."""
        assert self.router_process is not None
        if signum == signals.SIGKILL:
            self.router_process.kill_group(signum)  # the results actor dies with it
        else:
            self.router_process.signal(signum)
        self.router_process.popen.wait(10)
        self.router_process.stop()
        return self.start_router()

    def stop(self) -> None:
        for process in self.workers:
            process.stop()
        if self.router_process is not None:
            self.router_process.stop()

    def logs(self) -> str:
        parts = []
        for p in [self.router_process, *self.workers]:
            if p is not None:
                parts.append(f"===== {p.name} {p.pid}\n{p.log()}")
        return "\n".join(parts)


def is_spawned_child(cmdline: str) -> bool:
    """Whether a process's command line is one of zq's spawned children (an actor, the
    results actor): ``python -c ... spawn_main ...``, or its title where setproctitle is
    installed."""
    return "spawn_main" in cmdline or cmdline.startswith(("zq actor ", "zq results "))
