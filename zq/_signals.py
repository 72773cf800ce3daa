"""Wake a ZeroMQ poll when a signal arrives.

Python runs signal handlers only between bytecodes, and pyzmq resumes an interrupted poll
until its timeout; so a stop signal would wait for the poll to time out. With the wakeup
fd registered in the poller, the poll returns as soon as the signal is caught.
"""

from __future__ import annotations

import signal
import socket


class Wakeup:
    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)

    @property
    def fd(self) -> int:
        return self._read.fileno()

    def drain(self) -> None:
        try:
            while self._read.recv(512):
                pass
        except BlockingIOError:
            pass
