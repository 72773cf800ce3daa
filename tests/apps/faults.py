"""Tasks for the fault-injection tests: ``zq workers -A tests.apps.faults``.

Every task appends one line per run to a log file the test names: ``<task id> <pid>
<redelivered 0|1>``. The test reads it to find the process to kill and to count how often
each task ran. A line is one small ``write`` on a file opened for appending, so lines of
concurrent runs never interleave. The ``hold`` tasks, which run until the test creates a
gate file, write the same line to ``<log>.ended`` when they return.
"""

import os
import signal
import time

from tests.apps._shared import wait_for
from zq import App, Exchange, Queue

# A fanout exchange: a copy of each task sent to it goes to the default queue and "spare".
everyone = Exchange("everyone", type="fanout")
app = App("faults", task_queues=[Queue("celery", everyone), Queue("spare", everyone)])


def record(task, log):
    redelivered = int(bool(task.request.delivery_info.get("redelivered")))
    with open(log, "a") as f:
        f.write(f"{task.request.id} {os.getpid()} {redelivered}\n")


@app.task(bind=True)
def quick(self, log, value=None):
    record(self, log)
    return value


@app.task(bind=True)
def stamp(self, log):
    """The time the task ran, by the worker's clock."""
    record(self, log)
    return time.time()


@app.task(bind=True)
def hold(self, log, gate, timeout_s=25.0):
    """Run until the test creates ``gate`` (early ack, the default)."""
    record(self, log)
    wait_for(gate, timeout_s)
    record(self, f"{log}.ended")
    return "released"


@app.task(bind=True)
def hold_then_report(self, log, gate, reports, timeout_s=25.0):
    """Like ``hold``; once released, reports ``reports`` PROGRESS states, then returns."""
    record(self, log)
    wait_for(gate, timeout_s)
    for done in range(reports):
        self.update_state(state="PROGRESS", meta={"done": done})
    record(self, f"{log}.ended")
    return "released"


@app.task(bind=True, acks_late=True)
def hold_late(self, log, gate, timeout_s=25.0):
    record(self, log)
    wait_for(gate, timeout_s)
    record(self, f"{log}.ended")
    return "released"


@app.task(bind=True, acks_late=True, reject_on_worker_lost=False)
def hold_late_unrejected(self, log, gate, timeout_s=25.0):
    record(self, log)
    wait_for(gate, timeout_s)
    record(self, f"{log}.ended")
    return "released"


@app.task(bind=True, acks_late=True)
def nap_late(self, log, seconds):
    record(self, log)
    time.sleep(seconds)
    return seconds


@app.task(bind=True, acks_late=True)
def poison(self, log):
    """Kills every actor that runs it."""
    record(self, log)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(bind=True, acks_late=True, max_redeliveries=1)
def poison_redelivered_once(self, log):
    record(self, log)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(bind=True)
def nap(self, log, seconds, value=None):
    """Run for ``seconds`` (early ack), then return ``value``."""
    record(self, log)
    time.sleep(seconds)
    return value


@app.task(bind=True)
def gather(self, values, log):
    """A chord's body: records its run, returns what the header gave it."""
    record(self, log)
    return values
