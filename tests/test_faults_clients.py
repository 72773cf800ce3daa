"""Faults seen from a client (issue 9, item 4: "A failed submit stays failed").

A client told that its submit failed must be able to trust it: the task never runs behind
its back. Where the client cannot know (the message left, no answer came), the error says
so and names the task id, and sending the same id again runs the task once.
Real processes, real signals; runs counted as in ``tests/test_faults.py``.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

import zq
from tests.apps import faults
from tests.test_faults import (after_everything_queued, faults_cluster, kill_router, log,
                               run_counts)
from zq import states

pytestmark = pytest.mark.faults

__all__ = ["log"]  # the fixture, imported to be used here

app = faults.app


def test_submit_that_failed_while_the_router_was_down_never_runs(tmp_path, log):
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False) as cluster:
        before = faults.quick.delay(str(log), "before")  # the client is connected
        kill_router(cluster)
        time.sleep(0.3)  # the client's socket has seen the connection close
        lost_id = f"lost-{uuid.uuid4()}"
        with pytest.raises(zq.PublishError, match=f"task {lost_id} was NOT sent"):
            faults.quick.apply_async((str(log), "lost"), task_id=lost_id,
                                     publish_timeout_s=1)
        cluster.start_router()
        cluster.start_workers()
        assert before.get(timeout=15) == "before"
        after_everything_queued(log)
        time.sleep(3)  # anything still on its way has arrived by now
        assert run_counts(log)[lost_id] == 0
        assert app.AsyncResult(lost_id).state not in (states.SENT, states.SUCCESS)
        assert faults.quick.delay(str(log), "after").get(timeout=10) == "after"


def test_submit_unanswered_after_it_was_sent_says_the_outcome_is_unknown_and_a_resend_runs_once(
        tmp_path, log):
    """A paused router takes the message but cannot answer: the client cannot know whether
    it was accepted, says so, and the resend it suggests does not run the task twice."""
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        assert faults.quick.delay(str(log), "before").get(timeout=10) == "before"
        router = cluster.router_process
        assert router is not None
        task_id = f"unknown-{uuid.uuid4()}"
        router.signal(signal.SIGSTOP)
        try:
            with pytest.raises(zq.PublishError) as failed:
                faults.quick.apply_async((str(log), "once"), task_id=task_id,
                                         publish_timeout_s=1)
        finally:
            router.signal(signal.SIGCONT)
        message = str(failed.value)
        assert f"task {task_id}: outcome unknown" in message
        assert "sending it again" in message and task_id in message
        again = faults.quick.apply_async((str(log), "once"), task_id=task_id)
        assert again.get(timeout=10) == "once"
        after_everything_queued(log)
        assert run_counts(log)[task_id] == 1
