"""Processes the peer benchmarks start besides zq: a command logged to a file, a private
redis-server, and errors that carry the tail of their logs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO

from _common import BenchError, free_tcp_port, log

BENCH_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0
# The environment variable through which the benchmark's task modules (celery_tasks.py,
# huey_tasks.py, ...) learn their Redis URL, in the workers and in the benchmark alike.
REDIS_URL_VARIABLE = "ZQ_BENCH_REDIS_URL"


class Service:
    """A command in its own session, logged to a file, stopped with its whole group."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None):
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(list(args), stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL to the whole group."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.popen.pid}) did not exit after SIGKILL")
        self._log.close()


def wait_until(ready: Callable[[], bool], service: Service, what: str,
               timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``ready`` until it is true; fail if ``service`` exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not service.alive():
            raise BenchError(f"{service.name} exited with {service.popen.returncode} while "
                             f"waiting for {what}:\n{service.log_tail()}")
        if ready():
            return
        time.sleep(0.1)
    raise BenchError(f"timed out after {timeout_s:g}s waiting for {what}:\n"
                     f"{service.log_tail()}")


def start_redis(directory: Path, name: str = "redis-server") -> tuple[Service, str]:
    """A private redis-server on a free port with no persistence; it and its URL."""
    import redis

    port = free_tcp_port()
    server = Service(name, [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(directory)], directory / f"{name}.log")
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, server, f"{name} to answer PING")
    except BaseException:
        server.stop()
        raise
    return server, url


def redis_version() -> str:
    output = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                            timeout=10, check=False).stdout
    return output.split(" v=")[1].split()[0] if " v=" in output else output.strip()


def bench_env(redis_url: str) -> dict[str, str]:
    """This environment, with the Redis URL set and bench/ importable (the task modules)."""
    return {**os.environ, REDIS_URL_VARIABLE: redis_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR),
                                                        os.environ.get("PYTHONPATH")]))}


def with_logs(exc: BaseException, log_tails: dict[str, Callable[[], str]]) -> BenchError:
    """The error with the tail of each process's log, whose directory is about to go."""
    parts = [f"--- {name} logs (tail) ---\n{tail()}" for name, tail in log_tails.items()]
    return BenchError(f"{type(exc).__name__}: {exc}\n" + "\n".join(parts))
