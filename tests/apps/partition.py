"""Tasks for the network-cut tests (``tests/test_netns.py``): ``zq workers -A
tests.apps.partition`` on hosts in network namespaces.

Every task appends one line per run of its body to a log file the test names, ``<task id>
<pid> <redelivered 0|1> <start time>``, and the same line to ``<log>.ended`` when the body
returns. The file system is shared by every namespace, so the test reads both files to
count each id's runs, to tell which host ran them (by PID) and whether a run was cut short.
A line is one small ``write`` on a file opened for appending, so lines never interleave.
"""

import os
import time

from tests.apps._shared import wait_for
from zq import App

app = App("partition")


def record(task, log, started):
    redelivered = int(bool(task.request.delivery_info.get("redelivered")))
    with open(log, "a") as f:
        f.write(f"{task.request.id} {os.getpid()} {redelivered} {started:.3f}\n")


def _hold(task, log, gate, timeout_s):
    started = time.time()
    record(task, log, started)
    wait_for(gate, timeout_s)
    record(task, f"{log}.ended", started)
    return "held"


def _nap(task, log, seconds):
    started = time.time()
    record(task, log, started)
    time.sleep(seconds)
    record(task, f"{log}.ended", started)
    return seconds


@app.task(bind=True)
def hold(self, log, gate, timeout_s=30.0):
    """Run until the test creates ``gate`` (early ack, the default)."""
    return _hold(self, log, gate, timeout_s)


@app.task(bind=True, acks_late=True)
def hold_late(self, log, gate, timeout_s=30.0):
    return _hold(self, log, gate, timeout_s)


@app.task(bind=True)
def nap(self, log, seconds):
    return _nap(self, log, seconds)


@app.task(bind=True, acks_late=True)
def nap_late(self, log, seconds):
    return _nap(self, log, seconds)
