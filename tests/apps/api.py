"""Tasks for the end-to-end tests of the Celery task API (issue 3): ``-A tests.apps.api``.

Tasks that need to tell the test what happened inside the worker append JSON lines to a
file whose path they get as their first argument (see :func:`read_records`).
"""

import json
import os
import time
from collections import Counter
from pathlib import Path

from tests.apps import _shared
from tests.apps._shared import wait_for
from zq import (
    App,
    Exchange,
    Ignore,
    Queue,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    Task,
    current_task,
    get_task_logger,
)

logger = get_task_logger(__name__)

# How many instances of each task this process has made (ApiTask.__init__ counts them).
INITS: Counter = Counter()


class FlakyError(Exception):
    """What the retrying tasks fail with; importable, so the client re-raises it as is."""


class ApiTask(Task):
    """The app-wide task class (``task_cls``)."""

    def __init__(self):
        super().__init__()
        INITS[self.name] += 1

    def made_by(self):
        return "ApiTask"


def route_clips(name, args, kwargs, options, task=None, **extra):
    """A routing function, as Celery's ``task_routes`` takes them."""
    if name.endswith("_clip"):
        return {"queue": "video"}
    return None


media = Exchange("media", type="topic")
broadcast = Exchange("broadcast", type="fanout")
app = App(
    "api",
    task_cls=ApiTask,
    task_queues=[Queue("video", media, routing_key="video.#"),
                 Queue("image", media, routing_key="image.#"),
                 Queue("lowpri"),
                 # A fanout exchange: a copy of each task to the solo and video queues.
                 Queue("solo", broadcast),
                 Queue("video", broadcast)],
    task_routes=[{"tests.apps.api.compress_video": {"queue": "video"},
                  "tests.apps.api.*_image": {"queue": "image"},
                  "tests.apps.api.tidy_up": {"queue": "lowpri"}},
                 route_clips],
)


def record(path, **fields):
    """Append one JSON line to ``path`` (one write, so lines from processes never mix)."""
    line = json.dumps({"pid": os.getpid(), "t": time.time(), **fields}) + "\n"
    with open(path, "a") as f:
        f.write(line)


def read_records(path):
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- plain helpers -----------------------------------------------------------------------


@app.task
def add(x, y):
    return x + y


@app.task
def getpid(delay_s=0.0):
    time.sleep(delay_s)
    return os.getpid()


@app.task
def touch(path):
    """Leave a file behind, to prove the task ran."""
    Path(path).write_text(str(os.getpid()))
    return path


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def hold(started, gate, timeout_s=20.0):
    """Keep an actor busy: create ``started``, then run until the test creates ``gate``."""
    Path(started).touch()
    wait_for(gate, timeout_s)
    return os.getpid()


@app.task
def stamp(delay_s=0.0):
    """When it started (the worker's clock) and where."""
    started = time.time()
    time.sleep(delay_s)
    return [started, os.getpid()]


# -- the request context, logging, task classes ------------------------------------------


@app.task(bind=True)
def request_info(self, *args, **kwargs):
    r = self.request
    return {"id": r.id, "task": r.task, "args": list(r.args), "kwargs": dict(r.kwargs),
            "retries": r.retries, "eta": r.eta, "expires": r.expires, "hostname": r.hostname,
            "delivery_info": dict(r.delivery_info), "is_eager": r.is_eager,
            "called_directly": r.called_directly, "root_id": r.root_id,
            "parent_id": r.parent_id, "headers": dict(r.headers or {})}


@app.task(bind=True)
def lineage(self, depth):
    """Send a child task ``depth`` levels deep; each level reports its ids."""
    child = lineage.delay(depth - 1).id if depth > 0 else None
    return {"id": self.request.id, "root_id": self.request.root_id,
            "parent_id": self.request.parent_id, "child": child}


@app.task(bind=True)
def log_lines(self, text):
    logger.info("info line: %s", text)
    logger.warning("warning line: %s", text)
    return text


@app.task(bind=True)
def init_count(self):
    """This process's pid, how many instances of this task it made, and the task class."""
    return [os.getpid(), INITS[self.name], self.made_by()]


class Shouting(Task):
    """A base class for ``base=``: not tied to any app."""

    def transform(self, text):
        return text.upper()


@app.task(bind=True, base=Shouting)
def shout(self, text):
    return [self.transform(text), isinstance(self, ApiTask)]


# -- retrying ----------------------------------------------------------------------------


def _attempt(task, path, fails, countdown):
    """Record this attempt; retry with FlakyError until ``fails`` retries were made."""
    retries = task.request.retries
    record(path, id=task.request.id, retries=retries)
    if retries < fails:
        raise task.retry(exc=FlakyError(f"attempt {retries}"), countdown=countdown)
    return retries


@app.task(bind=True)
def retry_until(self, path, fails, countdown):
    return _attempt(self, path, fails, countdown)


@app.task(bind=True, max_retries=None)
def retry_forever(self, path, fails):
    return _attempt(self, path, fails, 0.05)


@app.task(bind=True, max_retries=2)
def retry_exhausted(self, path):
    return _attempt(self, path, 1000, 0.05)


@app.task(bind=True, max_retries=1, default_retry_delay=0.05)
def retry_without_exc(self, path):
    record(path, retries=self.request.retries)
    raise self.retry()


@app.task(bind=True, autoretry_for=(ConnectionError,),
          retry_kwargs={"max_retries": 2, "countdown": 0.05})
def auto_retry(self, path, fails):
    record(path, retries=self.request.retries)
    if self.request.retries < fails:
        raise ConnectionError(f"attempt {self.request.retries}")
    return self.request.retries


@app.task(bind=True, autoretry_for=(Exception,), dont_autoretry_for=(ValueError,),
          retry_kwargs={"countdown": 0.05})
def auto_retry_except(self, path):
    record(path, retries=self.request.retries)
    raise ValueError("not worth retrying")


@app.task(bind=True, autoretry_for=(ConnectionError,), retry_backoff=0.2, retry_jitter=False,
          max_retries=5)
def auto_backoff(self, path, fails):
    record(path, retries=self.request.retries)
    if self.request.retries < fails:
        raise ConnectionError(f"attempt {self.request.retries}")
    return self.request.retries


@app.task(bind=True, autoretry_for=(Exception,), retry_kwargs={"countdown": 0.05})
def auto_ignore(self, path):
    record(path, retries=self.request.retries)
    raise Ignore()


@app.task(bind=True, autoretry_for=(Exception,), retry_kwargs={"countdown": 0.05})
def auto_retry_signal(self, path):
    record(path, retries=self.request.retries)
    raise Retry("raised by hand")


# -- states and results ------------------------------------------------------------------


@app.task(bind=True)
def report_progress(self, steps, start_gate, end_gate=None):
    return _shared.report_progress(self, steps, start_gate, end_gate)


@app.task(ignore_result=True)
def touch_ignored(path):
    Path(path).write_text(str(os.getpid()))
    return path


@app.task(ignore_result=True)
def fail_ignored(message):
    raise ValueError(message)


# -- handlers ----------------------------------------------------------------------------


def _describe(einfo):
    if einfo is None:
        return None
    return {"class": type(einfo).__name__, "exception": repr(einfo.exception),
            "traceback": str(einfo)}


class Recorded(app.Task):
    """Every handler appends what it was called with to the file named by args[0]."""

    abstract = True

    def before_start(self, task_id, args, kwargs):
        record(args[0], handler="before_start", task_id=task_id, args=list(args),
               kwargs=kwargs)

    def on_success(self, retval, task_id, args, kwargs):
        record(args[0], handler="on_success", retval=retval, task_id=task_id,
               args=list(args), kwargs=kwargs)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        record(args[0], handler="on_failure", exc=repr(exc), task_id=task_id,
               args=list(args), kwargs=kwargs, einfo=_describe(einfo))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        record(args[0], handler="on_retry", exc=repr(exc), task_id=task_id,
               args=list(args), kwargs=kwargs, einfo=_describe(einfo))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        record(args[0], handler="after_return", status=status, retval=repr(retval),
               task_id=task_id, args=list(args), kwargs=kwargs, einfo=_describe(einfo))


@app.task(bind=True, base=Recorded)
def handled(self, path, outcome="succeed"):
    if outcome == "fail":
        raise ValueError("handled failure")
    if outcome == "retry" and self.request.retries == 0:
        raise self.retry(exc=FlakyError("retry me"), countdown=0.05)
    return f"ok {outcome}"


class Fragile(app.Task):
    abstract = True

    def on_success(self, retval, task_id, args, kwargs):
        raise RuntimeError("on_success handler broke")


@app.task(base=Fragile)
def handler_raises():
    return os.getpid()


# -- semipredicates ----------------------------------------------------------------------


@app.task(bind=True)
def ignored(self, path):
    record(path)
    raise Ignore()


@app.task(bind=True, acks_late=True)
def reject_once(self, path):
    redelivered = self.request.delivery_info["redelivered"]
    record(path, redelivered=redelivered)
    if not redelivered:
        raise Reject("first delivery", requeue=True)
    return self.request.delivery_info


@app.task(bind=True, acks_late=True, max_redeliveries=2)
def reject_forever(self, path):
    record(path, redelivered=self.request.delivery_info["redelivered"])
    raise Reject("never", requeue=True)


@app.task(bind=True, acks_late=True)
def reject_drop(self, path):
    record(path)
    raise Reject("drop it", requeue=False)


# -- limits ------------------------------------------------------------------------------


def _write_pid(path):
    tmp = Path(f"{path}.tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(path)


@app.task
def sleeper(pid_path, seconds):
    """Write this process's pid to ``pid_path``, then sleep."""
    _write_pid(pid_path)
    time.sleep(seconds)
    return os.getpid()


@app.task(time_limit=0.5)
def hard_limited(pid_path, seconds=10.0):
    _write_pid(pid_path)
    time.sleep(seconds)
    return os.getpid()


@app.task
def stubborn(pid_path, seconds=10.0):
    """Sleep ``seconds`` and shrug off soft time limits."""
    _write_pid(pid_path)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(max(0.0, deadline - time.monotonic()))
        except SoftTimeLimitExceeded:
            pass
    return os.getpid()


def _catch_soft_limit(seconds):
    started = time.monotonic()
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded as exc:
        return ["caught", type(exc).__name__, time.monotonic() - started]
    return ["finished", None, time.monotonic() - started]


@app.task(soft_time_limit=0.3)
def soft_limited(seconds):
    return _catch_soft_limit(seconds)


@app.task
def soft_catcher(seconds):
    return _catch_soft_limit(seconds)


_HELD = []


@app.task
def hog(mib, delay_s=0.0):
    """Allocate ``mib`` MiB and keep it (written to, so it is resident)."""
    _HELD.append(b"\x01" * (mib * 1024 * 1024))
    time.sleep(delay_s)
    return os.getpid()


@app.task(rate_limit="5/s")
def rate_limited(duration_s=0.25):
    started = time.time()
    time.sleep(duration_s)
    return [started, os.getpid()]


@app.task
def rate_changed():
    return [time.time(), os.getpid()]


@app.task(rate_limit="5 per fortnight")
def bad_rate():
    return "never sent"


# -- routing -----------------------------------------------------------------------------


def _where():
    request = current_task().request
    return {"queue": request.delivery_info.get("queue"),
            "exchange": request.delivery_info.get("exchange"),
            "routing_key": request.delivery_info.get("routing_key"), "pid": os.getpid()}


@app.task
def where():
    return _where()


@app.task
def compress_video():
    return _where()


@app.task
def resize_image():
    return _where()


@app.task
def crop_image():
    return _where()


@app.task
def cut_clip():
    return _where()


@app.task
def tidy_up():
    return _where()


@app.task(bind=True)
def each_copy(self, path, retries=0):
    """Record which queue this copy came from; retry ``retries`` times first."""
    record(path, id=self.request.id, queue=self.request.delivery_info["queue"],
           retries=self.request.retries)
    if self.request.retries < retries:
        raise self.retry(countdown=0.05)
    return self.request.delivery_info["queue"]


@app.task(bind=True)
def copy_outcome(self, path, failing_queue):
    """Succeed at once, except in ``failing_queue``: there retry once, then fail."""
    queue = self.request.delivery_info["queue"]
    record(path, queue=queue, retries=self.request.retries)
    if queue != failing_queue:
        return queue
    if self.request.retries == 0:
        raise self.retry(countdown=0.3)
    raise ValueError(f"the {queue} copy failed")


@app.task(bind=True)
def retry_where(self):
    """Retry once, then report where the second attempt ran."""
    if self.request.retries == 0:
        raise self.retry(countdown=0.05)
    return _where()
