"""The journal's fsyncs, run in a thread beside the router's loop (a group commit)."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .journal import Journal

logger = logging.getLogger("zq.journal")


class Syncer(threading.Thread):
    """Runs the journal's fsyncs off the router's loop, each covering every commit written
    before it started; a byte on ``read_fd`` tells the router that one finished."""

    def __init__(self, journal: Journal):
        super().__init__(name="zq-journal-sync", daemon=True)
        self.journal = journal
        self.done = journal.written
        self.error: OSError | None = None
        self._wanted = journal.written
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
                with self.journal._swap_lock:
                    os.fsync(self.journal._file.fileno())
            except OSError as exc:
                logger.critical("journal %s: fsync failed: %s", self.journal.path, exc)
                self.error = exc
                self._notify()
                return
            self.journal.syncs += 1
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
