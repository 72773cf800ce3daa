"""Tasks for the end-to-end tests: ``zq workers -A tests.apps.basic``."""

import os
import time
from pathlib import Path

from tests.apps import _shared
from tests.apps._shared import wait_for
import zq
from zq import App, chain

app = App("basic")


@app.task
def add(x, y):
    return x + y


@app.task()
def echo(value):
    return value


@app.task(name="custom.ping")
def ping():
    return "pong"


@app.task
def now():
    """The time the task ran, by the worker's clock."""
    return time.time()


@app.task
def touch(path):
    """Leave a file behind, to prove the task ran."""
    Path(path).write_text(str(os.getpid()))
    return path


@app.task
def getpid(delay_s=0.0):
    time.sleep(delay_s)
    return os.getpid()


@app.task
def wait_for_file(path, timeout_s=20.0):
    """Run until the test creates ``path``: a task the test finishes when it wants."""
    wait_for(path, timeout_s)
    return "released"


@app.task(track_started=True)
def tracked_wait_for_file(path, timeout_s=20.0):
    wait_for(path, timeout_s)
    return "released"


@app.task(bind=True)
def progress(self, steps, start_gate, end_gate=None):
    return _shared.report_progress(self, steps, start_gate, end_gate)


@app.task(bind=True)
def count_calls(self):
    """How many times this process's instance of the task has run, and where."""
    self.calls = getattr(self, "calls", 0) + 1
    return [os.getpid(), self.calls]


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def fail_with_local_class(message):
    class HiddenError(Exception):
        pass

    raise HiddenError(message)


class Multiply(app.Task):
    def run(self, x, y):
        return x * y


class Greeter(app.Task):
    abstract = True

    greeting = "hello"

    def run(self, name):
        return f"{self.greeting} {name}"


class Welcome(Greeter):
    greeting = "welcome"


@app.task(bind=True)
def request_info(self):
    """What the running task knows of its own call."""
    request = self.request
    return {"id": request.id, "retries": request.retries, "headers": request.headers,
            "queue": request.delivery_info.get("queue"), "is_eager": request.is_eager,
            "called_directly": request.called_directly}


# -- canvas ------------------------------------------------------------------------------


@app.task(bind=True)
def lineage(self, *args):
    """Where the running task sits in a workflow: its ids, and what it was given."""
    request = self.request
    return {"id": request.id, "root_id": request.root_id, "parent_id": request.parent_id,
            "group": request.group, "args": list(args)}


@app.task
def xsum(values):
    return sum(values)


@app.task
def run_signature(sig):
    """Rebuild a signature that travelled as an argument, and call it here."""
    return zq.signature(sig)()


@app.task
def make_signature(x, y):
    """Return a signature, for the caller to rebuild and send."""
    return add.s(x, y)


@app.task
def reject_for_good():
    raise zq.Reject("not for me", requeue=False)


@app.task
def wait_inside(allow=False):
    """Wait for another task's result inside a task: Celery refuses unless allowed."""
    return add.delay(1, 1).get(timeout=10, disable_sync_subtasks=not allow)


class Counter(app.Task):
    name = "basic.Counter"

    def __init__(self):
        # A task's own __init__ need not call the base class's (as in Celery).
        self.start = 10

    def run(self, step):
        self.start += step
        return self.start


# -- chords, callbacks, replace ----------------------------------------------------------


@app.task
def slow_add(x, y, delay_s=0.0):
    time.sleep(delay_s)
    return x + y


@app.task
def mark(value, path):
    """Append ``value`` to the file at ``path`` (one line per call); return it."""
    with open(path, "a") as f:
        f.write(f"{value!r}\n")
    return value


@app.task
def errback_with_request(request, exc, traceback, path):
    """A Celery 5 errback: called in the worker with the failed task's request."""
    with open(path, "a") as f:
        f.write(f"{request.id} {type(exc).__name__} {exc}\n")


@app.task
def errback_with_id(task_id, *, path):
    """An old-style errback: sent as a task with the failed task's id."""
    with open(path, "a") as f:
        f.write(f"{task_id}\n")


@app.task(bind=True)
def replaced_by(self, sig):
    """Replace this task with the signature it was given."""
    return self.replace(zq.signature(sig, app=app))


@app.task(bind=True, max_retries=3)
def retry_once(self, value, path):
    """Fail its first attempt (retrying at once), then return ``value``."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    with open(path, "a") as f:
        f.write(f"{value!r}\n")
    return value


@app.task(ignore_result=True)
def quiet_add(x, y):
    return x + y


# -- the tasks of Celery's integration suite (t/integration/tasks.py), as zq writes them --


@app.task
def identity(x):
    return x


@app.task
def tsum(nums):
    return sum(nums)


@app.task
def add_to_all(nums, val):
    return [n + val for n in nums]


@app.task(bind=True)
def add_replaced(self, x, y):
    """Replaced by add(x, y)."""
    raise self.replace(add.s(x, y))


@app.task(bind=True)
def replace_with_chain(self, *args, link_msg=None):
    c = chain(identity.s(*args), identity.s())
    return self.replace(c)


@app.task(bind=True)
def fail_replaced(self, *args):
    """Replaced by a task that fails."""
    raise self.replace(fail.si("replaced and failed"))
