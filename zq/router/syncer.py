"""The journal's fsyncs, run in a thread beside the router's loop (a group commit)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

logger = logging.getLogger("zq.journal")


class Syncer(threading.Thread):
    """Runs the journal's fsyncs off the router's loop, each covering every commit written
    before it started; a byte on ``read_fd`` tells the router that one finished."""

    def __init__(self, fsync: Callable[[], None], written: int, what: str):
        """``fsync`` syncs the file (an OSError says it failed); ``written`` commits are
        on disk already; ``what`` names the file in messages."""
        super().__init__(name="zq-journal-sync", daemon=True)
        self._fsync = fsync
        self._what = what
        self.done = written
        self.syncs = 0
        self.error: OSError | None = None
        self._wanted = written
        self._stopping = False
        self._cond = threading.Condition()
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)

    def request(self, written: int) -> None:
        with self._cond:
            self._wanted = written
            self._cond.notify()

    def mark_synced(self, written: int) -> None:
        with self._cond:
            self.done = max(self.done, written)
        self._notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while self._wanted <= self.done and not self._stopping:
                    self._cond.wait()
                if self._wanted <= self.done:
                    return
                target = self._wanted
            try:
                self._fsync()
            except OSError as exc:
                logger.critical("%s: fsync failed: %s", self._what, exc)
                self.error = exc
                self._notify()
                return
            self.syncs += 1
            with self._cond:
                self.done = max(self.done, target)
            self._notify()

    def _notify(self) -> None:
        try:
            os.write(self._write_fd, b"s")
        except BlockingIOError:
            pass  # the router has a wakeup waiting already

    def stop(self) -> None:
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify()
        self.join()
        os.close(self.read_fd)
        os.close(self._write_fd)
