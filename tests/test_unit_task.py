"""Task options and helpers: the retry backoff formula, the request context."""

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
