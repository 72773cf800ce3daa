"""A child process's lifeline to its parent: when the parent dies, the child dies too.

Two mechanisms, because neither is enough alone:

* Linux's ``PR_SET_PDEATHSIG``: the kernel sends the child a signal the moment its parent
  exits, however it exits (SIGKILL included). It is set in the child at start-up, so a
  parent that died before that is missed; :func:`attach` checks for that right after.
  The kernel watches the *thread* that started the child: start children from a thread
  that lives as long as the process (zq's routers and supervisors use their main thread).
* :meth:`Lifeline.parent_alive`, a check the child's loop makes each step: once its
  parent has died, a child is adopted (by init or a subreaper) and its parent PID is never
  the dead parent's again. It covers systems without ``prctl``, so it asks the kernel at
  most once a second: a busy actor steps once per task.

The parent's PID comes from :mod:`multiprocessing` (the spawn start method passes it on
the command line), not from ``os.getppid()`` at start-up: that would already be the
adopter's if the parent died first.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time

logger = logging.getLogger("zq.lifeline")

_PR_SET_PDEATHSIG = 1
# How often parent_alive asks the kernel (a syscall); in between it answers from memory.
_CHECK_EVERY_S = 1.0


class Lifeline:
    """Whether the process that started this one is still alive."""

    def __init__(self, parent_pid: int):
        self.parent_pid = parent_pid
        self._next_check = 0.0

    def parent_alive(self) -> bool:
        now = time.monotonic()
        if now < self._next_check:
            return True
        if os.getppid() != self.parent_pid:
            return False
        self._next_check = now + _CHECK_EVERY_S
        return True


def attach(signum: int = signal.SIGTERM) -> Lifeline:
    """Ask for ``signum`` when the parent dies; if it is dead already, take it now.

    Call it first thing in a child process's entry point. ``signum`` is what the child
    gets: SIGTERM for one that should stop cleanly, SIGKILL for one that must stop even in
    the middle of its work.
    """
    parent = multiprocessing.parent_process()
    lifeline = Lifeline(parent.pid if parent is not None and parent.pid else os.getppid())
    _set_pdeathsig(signum)
    if not lifeline.parent_alive():
        # The parent died before the kernel could be asked to tell us: do what it would
        # have done.
        logger.warning("parent %d died before this process started; exiting",
                       lifeline.parent_pid)
        os.kill(os.getpid(), signum)
    return lifeline


def _set_pdeathsig(signum: int) -> None:
    if not sys.platform.startswith("linux"):
        logger.debug("no parent-death signal on %s; relying on the parent check",
                     sys.platform)
        return
    try:
        # The running program's own symbols include libc's (no library search needed).
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        logger.debug("could not set the parent-death signal (%s); relying on the parent "
                     "check", exc)
