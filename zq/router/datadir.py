"""The router's data dir: checked before anything starts in it, and locked for its life.

Two routers on one data dir would each rewrite the journal under the other, so a router
holds an exclusive ``flock`` on ``router.lock`` in it, with its PID written there for the
next one to name. The kernel releases the lock when the process dies, however it dies, so
a restart after SIGKILL takes it at once; the descriptor is not inherited by the results
actor, which could otherwise keep the lock after its router died.

Every problem here is a :class:`~zq.errors.ConfigurationError` with a one-line message
that names the path and the reason.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from ..errors import ConfigurationError

logger = logging.getLogger("zq.router")

LOCK_FILE = "router.lock"


class DataDir:
    """A usable data dir, locked by this process until :meth:`close`."""

    def __init__(self, path: Path, lock_fd: int):
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def open(cls, path: Path) -> DataDir:
        _check(path)
        return cls(path, _lock(path / LOCK_FILE))

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _check(path: Path) -> None:
    """The dir exists (or is created, but never its missing parents: a parent missing
    is more often a typo or a volume not mounted than a wish) and can be written."""
    try:
        if not path.exists():
            parent = path.absolute().parent
            if not parent.is_dir():
                why = "does not exist" if not parent.exists() else "is not a directory"
                raise ConfigurationError(f"data dir {path} cannot be created: {parent} {why}")
            try:
                path.mkdir()
            except FileExistsError:
                pass
            except OSError as exc:
                raise ConfigurationError(f"data dir {path} cannot be created: "
                                         f"{exc.strerror or exc}") from None
        if not path.is_dir():
            raise ConfigurationError(f"data dir {path} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            if os.statvfs(path).f_flag & os.ST_RDONLY:
                raise ConfigurationError(f"data dir {path} is read-only "
                                         f"(its file system is mounted read-only)")
            raise ConfigurationError(f"data dir {path} is not writable: permission denied")
    except OSError as exc:
        raise ConfigurationError(f"data dir {path}: {exc.strerror or exc}") from None


def _lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigurationError(f"data dir {path.parent}: cannot open its lock file "
                                 f"{path.name}: {exc.strerror or exc}") from None
    os.set_inheritable(fd, False)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigurationError(
                f"data dir {path.parent} is in use by another router "
                f"(PID {holder or 'unknown'}, holding {path})") from None
        raise ConfigurationError(f"data dir {path.parent}: cannot lock {path.name}: "
                                 f"{exc.strerror or exc}") from None
    # Written over the last holder's PID, then cut to length: overwriting bytes the file
    # has needs no room, so this works on a full disk too.
    pid = f"{os.getpid()}\n".encode()
    try:
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
    except OSError as exc:
        logger.warning("cannot write this router's PID into %s: %s", path,
                       exc.strerror or exc)
        try:
            os.ftruncate(fd, 0)  # rather no PID than another process's
        except OSError:
            pass
    return fd


def _holder(fd: int) -> str | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None
