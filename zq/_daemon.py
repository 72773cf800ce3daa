"""What ``--logfile``, ``--pidfile`` and ``--detach`` do for ``zq router`` and ``zq
workers``, before anything else starts (no socket, no child process yet).

The log file takes the process's stderr (file descriptor 2), so every process it starts
(the results actor, the actors) and the worker's banner write there too. The pid file
holds the pid of the process that serves (after ``--detach``, the detached one); a pid file
whose process is alive refuses a second start, a stale one is replaced, and it is removed
on the way out.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import psutil

from .errors import ConfigurationError


def prepare(logfile: str | None, pidfile: str | None, detach: bool) -> None:
    if pidfile:
        _check(Path(pidfile))  # before detaching, so that the refusal is seen
    if detach:
        _detach()
    if logfile:
        _log_to(Path(logfile))
    if pidfile:
        _hold(Path(pidfile))


def _detach() -> None:
    """Fork into the background (a new session, no terminal): the command returns."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _log_to(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise ConfigurationError(f"log file {path}: {exc.strerror or exc}") from None
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)


def _check(path: Path) -> None:
    try:
        held = int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"pid file {path}: cannot read it ({exc})") from None
    if held and held != os.getpid() and psutil.pid_exists(held):
        raise ConfigurationError(f"pid file {path}: process {held} is running; stop it first "
                                 f"or remove the file if it is not zq")


def _hold(path: Path) -> None:
    _check(path)
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise ConfigurationError(f"pid file {path}: {exc.strerror or exc}") from None
    pid = os.getpid()

    def remove() -> None:
        try:
            if os.getpid() == pid and path.read_text().strip() == str(pid):
                path.unlink()
        except OSError:
            pass

    atexit.register(remove)
