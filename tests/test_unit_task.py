"""Task options and helpers: the retry backoff formula, the request context."""

import inspect
import random

import pytest

from zq import App
from zq.trace import backoff_countdown

app = App("unit-task", router="ipc:///nonexistent/zq-unit-tests.sock")


def task_with(**options):
    name = f"backoff.{len(app.tasks)}"
    return app.task(name=name, **options)(lambda: None)


@pytest.mark.parametrize(("retries", "expected"), [(0, 1), (1, 2), (2, 4), (5, 32)])
def test_backoff_true_doubles_from_one_second(retries, expected):
    task = task_with(retry_backoff=True, retry_jitter=False)
    assert backoff_countdown(task, retries) == expected


@pytest.mark.parametrize(("retries", "expected"), [(0, 3), (1, 6), (3, 24)])
def test_backoff_factor_multiplies(retries, expected):
    task = task_with(retry_backoff=3, retry_jitter=False)
    assert backoff_countdown(task, retries) == expected


def test_backoff_is_capped_by_retry_backoff_max():
    assert backoff_countdown(task_with(retry_backoff=True, retry_jitter=False), 20) == 600
    task = task_with(retry_backoff=True, retry_backoff_max=10, retry_jitter=False)
    assert backoff_countdown(task, 4) == 10


def test_jitter_picks_a_whole_number_from_zero_to_the_countdown():
    random.seed(1234)
    task = task_with(retry_backoff=True, retry_jitter=True)
    values = [backoff_countdown(task, 4) for _ in range(300)]
    assert all(0 <= v <= 16 and v == int(v) for v in values)
    assert len(set(values)) > 8


def test_request_outside_a_task_is_a_default_one():
    task = task_with()
    assert task.request.id is None
    assert task.request.called_directly


def test_update_state_outside_a_task_needs_an_id():
    with pytest.raises(ValueError, match="task_id"):
        task_with().update_state(state="PROGRESS")


# -- the argument check before sending: bind's verdict, remembered per shape of call --------

def _plain(a, b):
    pass


def _defaults(a, b=1, c=2):
    pass


def _star(a, *rest, **more):
    pass


def _keyword_only(a, *, b, c=3):
    pass


def _positional_only(a, b=1, /, c=2):
    pass


def _positional_only_and_more(a, /, **more):
    pass


def _nothing():
    pass


_SHAPES = [(count, names) for count in range(5)
           for names in [(), ("a",), ("b",), ("c",), ("d",), ("b", "c"), ("c", "b"),
                         ("a", "b", "c"), ("d", "a")]]


def _bind_says(func, count, names):
    """What inspect's bind says of the call, as the text the task's check would raise."""
    try:
        inspect.signature(func).bind(*range(count), **dict.fromkeys(names, 0))
    except TypeError as exc:
        return f"{func.__name__}() {exc}"
    return None


@pytest.mark.parametrize("func", [_plain, _defaults, _star, _keyword_only, _positional_only,
                                  _positional_only_and_more, _nothing])
def test_the_argument_check_says_what_bind_says_every_time(func):
    task = app.task(name=func.__name__)(func)
    expected = {shape: _bind_says(func, *shape) for shape in _SHAPES}
    for _ in range(3):  # the first round fills the remembered shapes, the others use them
        for count, names in _SHAPES:
            args = list(range(count)) if count % 2 else tuple(range(count))
            try:
                task._check_arguments(args, dict.fromkeys(names, 0))
                said = None
            except TypeError as exc:
                said = str(exc)
            assert said == expected[count, names], (count, names)


def test_the_argument_check_of_a_bound_task_leaves_out_self():
    @app.task(name="bound_check", bind=True)
    def bound(self, x):
        return x

    bound._check_arguments((1,), {})
    bound._check_arguments((1,), {})
    with pytest.raises(TypeError, match=r"bound_check\(\) too many positional arguments"):
        bound._check_arguments((1, 2), {})


def test_the_argument_check_takes_arguments_of_other_types_as_bind_does():
    task = app.task(name="other_types")(_defaults)
    task._check_arguments("ab", {})  # two positional arguments, to bind
    with pytest.raises(TypeError, match="must be an iterable"):
        task._check_arguments(5, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a mapping"):
        task._check_arguments((1,), [("b", 2)])  # type: ignore[arg-type]
