"""The App and its tasks without any process: registry, names, local calls."""

from __future__ import annotations

import os
import threading
import time

import pytest

import zq
from zq import App, EagerResult, states

# The tasks every App has, that run map() and starmap() on a worker.
BUILTINS = {"zq.map", "zq.starmap", "zq.accumulate", "zq.replace_with"}

NOWHERE = "ipc:///nonexistent/zq-unit-tests.sock"


@pytest.fixture
def app():
    return App("proj", router=NOWHERE)


def test_task_without_parentheses_is_registered_under_module_and_name(app):
    @app.task
    def add(x, y):
        return x + y

    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add
    assert isinstance(add, app.Task)


def test_task_with_parentheses_and_options(app):
    @app.task(bind=True, max_retries=7)
    def bound(self):
        return self

    assert bound.max_retries == 7
    assert app.tasks[f"{__name__}.bound"] is bound


def test_name_overrides_the_default(app):
    @app.task(name="custom.name")
    def anything():
        return 1

    assert anything.name == "custom.name"
    assert set(app.tasks) - BUILTINS == {"custom.name"}


def test_positional_argument_to_the_decorator_is_refused(app):
    with pytest.raises(TypeError, match="keyword options only"):
        app.task("name")


def test_main_stands_in_for_dunder_main(app):
    def job():
        return 1

    job.__module__ = "__main__"
    assert app.task(job).name == "proj.job"


def test_class_based_task_is_registered(app):
    class Multiply(app.Task):
        def run(self, x, y):
            return x * y

    task = app.tasks[f"{__name__}.Multiply"]
    assert isinstance(task, Multiply)
    assert task(3, 4) == 12


def test_abstract_base_is_not_registered_but_its_subclass_is(app):
    class Base(app.Task):
        abstract = True

        def run(self):
            return type(self).__name__

    class Concrete(Base):
        pass

    assert [name for name in app.tasks if name not in BUILTINS] == [f"{__name__}.Concrete"]
    assert app.tasks[f"{__name__}.Concrete"]() == "Concrete"


def test_class_with_explicit_name(app):
    class Named(app.Task):
        name = "explicit"

        def run(self):
            return 1

    assert "explicit" in app.tasks


class PrefixApp(App):
    def gen_task_name(self, name, module):
        return f"prefixed.{module.rsplit('.', 1)[-1]}.{name}"


def test_gen_task_name_overridden_in_a_subclass_names_function_tasks():
    app = PrefixApp("p", router=NOWHERE)

    @app.task
    def add(x, y):
        return x + y

    assert add.name == "prefixed.test_unit_app.add"
    assert app.tasks["prefixed.test_unit_app.add"] is add


def test_gen_task_name_overridden_in_a_subclass_names_class_tasks():
    app = PrefixApp("p", router=NOWHERE)

    class Job(app.Task):
        def run(self):
            return 1

    assert Job.name == "prefixed.test_unit_app.Job"


def test_name_argument_beats_gen_task_name():
    app = PrefixApp("p", router=NOWHERE)
    assert app.task(name="mine")(lambda: 1).name == "mine"


def test_one_instance_per_task_reused_between_calls(app):
    @app.task(bind=True)
    def counter(self):
        self.calls = getattr(self, "calls", 0) + 1
        return self.calls

    assert [counter.apply().get() for _ in range(3)] == [1, 2, 3]
    assert app.tasks[counter.name] is counter


def test_calling_a_task_runs_the_function_directly(app):
    @app.task(bind=True)
    def whoami(self, x):
        return x, self.request.called_directly

    assert whoami(5) == (5, True)


def test_apply_runs_locally_and_returns_an_eager_result(app):
    @app.task(bind=True)
    def job(self, x, y=1):
        return x * y, self.request.id, self.request.is_eager

    result = job.apply((3,), {"y": 4}, task_id="local-1")
    assert isinstance(result, EagerResult)
    assert result.get() == (12, "local-1", True)
    assert result.state == result.status == states.SUCCESS
    assert result.ready() and result.successful() and not result.failed()
    assert result.id == "local-1"


def test_apply_of_a_failing_task_records_the_failure(app):
    @app.task
    def broken():
        raise KeyError("missing")

    result = broken.apply()
    assert result.state == states.FAILURE and result.failed()
    assert isinstance(result.result, KeyError)
    assert "KeyError: 'missing'" in result.traceback
    assert isinstance(result.get(propagate=False), KeyError)
    with pytest.raises(KeyError):
        result.get()


def test_apply_with_throw_raises(app):
    @app.task
    def broken():
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        broken.apply(throw=True)


def test_always_eager_runs_apply_async_locally():
    app = App("eager", router=NOWHERE, task_always_eager=True)

    @app.task
    def add(x, y):
        return x + y

    assert add.delay(2, 3).get() == 5


def test_wrong_arguments_are_refused_before_sending(app):
    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(TypeError, match="add"):
        add.delay(1)
    with pytest.raises(TypeError, match="add"):
        add.delay(1, 2, z=3)


def test_args_must_be_a_sequence(app):
    with pytest.raises(TypeError, match="args must be a list or tuple"):
        app.send_task("t", args="12")


def test_send_task_waits_for_the_router_and_fails_clearly_without_one(tmp_path):
    app = App("lonely", router=f"ipc://{tmp_path}/no-router.sock", publish_timeout_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(zq.PublishError, match="no answer from the router"):
            app.send_task("anything", [1])
    finally:
        app.close()
    assert time.monotonic() - started < 3.0


def test_signature_holds_a_call(app):
    @app.task
    def add(x, y):
        return x + y

    sig = add.s(2)
    assert sig.task == add.name and sig.args == (2,)
    assert sig.clone((1,)).args == (1, 2)
    assert add.si(2, 2).clone((9,)).args == (2, 2)
    assert sig(5) == 7


def test_chain_of_signatures(app):
    @app.task
    def add(x, y):
        return x + y

    chained = add.s(1, 1) | add.s(2) | add.s(3)
    assert isinstance(chained, zq.chain)
    assert [s.args for s in chained.tasks] == [(1, 1), (2,), (3,)]


# -- app-wide defaults in the task message ---------------------------------------------


def header(app, name="t", **options):
    return app.task_message(name, **options)[0]


def test_app_wide_time_limits_go_in_the_header_of_a_task_that_sets_none():
    app = App("limits", router=NOWHERE, task_time_limit=5, task_soft_time_limit=2)

    @app.task
    def plain():
        return None

    assert (header(app, plain.name)["time_limit"], header(app, plain.name)["soft_time_limit"]) \
        == (5, 2)
    assert (header(app, "not.known.here")["time_limit"],
            header(app, "not.known.here")["soft_time_limit"]) == (5, 2)


def test_a_tasks_own_time_limits_beat_the_app_wide_ones():
    app = App("limits", router=NOWHERE, task_time_limit=5, task_soft_time_limit=2)

    @app.task(time_limit=30, soft_time_limit=20)
    def slow():
        return None

    assert (header(app, slow.name)["time_limit"], header(app, slow.name)["soft_time_limit"]) \
        == (30, 20)


def test_a_calls_time_limits_beat_the_tasks_and_the_apps():
    app = App("limits", router=NOWHERE, task_time_limit=5, task_soft_time_limit=2)

    @app.task(time_limit=30)
    def slow():
        return None

    sent = header(app, slow.name, time_limit=1, soft_time_limit=0.5)
    assert (sent["time_limit"], sent["soft_time_limit"]) == (1, 0.5)


def test_without_limits_anywhere_the_header_has_none(app):
    sent = header(app)
    assert "time_limit" not in sent and "soft_time_limit" not in sent


def test_unset_routing_defaults_send_to_the_default_queue(app):
    sent = header(app)
    assert (sent["queue"], sent.get("exchange"), sent.get("rk")) == ("celery", None, None)


def test_default_exchange_and_routing_key_route_a_task_nothing_else_routes():
    app = App("routed", router=NOWHERE, task_default_exchange="tasks",
              task_default_routing_key="task.default", task_routes={"feeds.*": "feeds"})
    sent = header(app)
    assert (sent.get("queue"), sent["exchange"], sent["rk"]) == (None, "tasks", "task.default")
    # What names a destination still wins: task_routes, the call's queue.
    assert header(app, "feeds.import")["queue"] == "feeds"
    assert header(app, queue="direct")["queue"] == "direct"


def test_a_routing_key_alone_goes_through_the_default_exchange():
    app = App("routed", router=NOWHERE, task_default_exchange="tasks")
    sent = header(app, routing_key="feed.import")
    assert (sent.get("queue"), sent["exchange"], sent["rk"]) == (None, "tasks", "feed.import")


def test_an_exchange_alone_takes_the_default_routing_key():
    app = App("routed", router=NOWHERE, task_default_routing_key="task.default")
    sent = header(app, exchange="media")
    assert (sent["exchange"], sent["rk"]) == ("media", "task.default")


def test_default_exchange_alone_uses_the_default_queue_as_routing_key():
    app = App("routed", router=NOWHERE, task_default_queue="main",
              task_default_exchange="tasks")
    sent = header(app)
    assert (sent.get("queue"), sent["exchange"], sent["rk"]) == (None, "tasks", "main")


def test_default_routing_key_alone_routes_by_the_default_exchange_to_that_queue():
    app = App("routed", router=NOWHERE, task_default_routing_key="hipri")
    sent = header(app)
    assert (sent.get("queue"), sent.get("exchange"), sent["rk"]) == (None, None, "hipri")


# -- the App in use -----------------------------------------------------------------------


def test_results_and_signatures_without_an_app_use_the_last_app_made():
    first = App("first", router=NOWHERE)
    last = App("last", router=NOWHERE)
    assert zq.AsyncResult("some-id").app is last
    assert zq.signature("t")._app() is last
    assert first is not last


class _Held:
    """Stands for a client's socket: records whether anything closed it."""

    closed = False
    unconfirmed: dict[str, object] = {}

    def close(self) -> None:
        self.closed = True


def test_a_forked_child_makes_its_own_sockets_and_leaves_the_parents_alone(app):
    held = _Held()
    pending = EagerResult("waited-for", 1, states.SUCCESS, app=app)
    app._local().router = held
    app._local().results = held
    app.track(pending)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it finds goes up the pipe
        try:
            local = app._local()
            again = app._local()
            os.write(write, repr((local.router, local.results, dict(local.pending),
                                  again is local, held.closed)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        seen = pipe.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    assert seen == repr((None, None, {}, True, False))
    # The parent keeps its own.
    assert app._local().router is held and app._local().results is held
    assert dict(app._local().pending) == {"waited-for": pending}
    assert not held.closed


def test_each_thread_has_its_own_sockets(app):
    app._local().router = _Held()
    seen = []
    thread = threading.Thread(target=lambda: seen.append(app._local().router))
    thread.start()
    thread.join()
    assert seen == [None]
