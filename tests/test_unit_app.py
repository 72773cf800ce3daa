"""The App and its tasks without any process: registry, names, local calls."""

from __future__ import annotations

import time

import pytest

import zq
from zq import App, EagerResult, states

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
    assert set(app.tasks) == {"custom.name"}


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

    assert list(app.tasks) == [f"{__name__}.Concrete"]
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
