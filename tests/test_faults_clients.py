"""Faults seen from clients (issue 9): a failed submit stays failed (item 4), and
strangers cannot make the results actor spend much memory (item 10).

A client told that its submit failed must be able to trust it: the task never runs behind
its back. Where the client cannot know (the message left, no answer came), the error says
so and names the task id, and sending the same id again runs the task once.
Real processes, real signals; runs counted as in ``tests/test_faults.py``.
"""

from __future__ import annotations

import signal
import time
import uuid

import psutil
import pytest
import zmq

import zq
from tests.apps import faults
from tests.test_faults import (after_everything_queued, faults_cluster, kill_router, log,
                               results_actor_pid, run_counts)
from zq import protocol, states
from zq.protocol import Cmd, Message
from zq.utils import reachable

pytestmark = pytest.mark.faults

__all__ = ["log"]  # the fixture, imported to be used here

app = faults.app


def test_submit_that_failed_while_the_router_was_down_never_runs(tmp_path, log):
    with faults_cluster(tmp_path / "cluster", concurrency=1, start_workers=False) as cluster:
        before = faults.quick.delay(str(log), "before")  # the client is connected
        kill_router(cluster)
        time.sleep(0.3)  # the client's socket has seen the connection close
        lost_id = f"lost-{uuid.uuid4()}"
        with pytest.raises(zq.PublishError, match=f"task {lost_id} was NOT sent") as failed:
            faults.quick.apply_async((str(log), "lost"), task_id=lost_id,
                                     publish_timeout_s=1)
        assert failed.value.outcome == "not sent"
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
                                         publish_timeout_s=1, confirm=True)
        finally:
            router.signal(signal.SIGCONT)
        message = str(failed.value)
        assert failed.value.outcome == "unknown"
        assert f"task {task_id}: outcome unknown" in message
        assert "sending it again" in message and task_id in message
        again = faults.quick.apply_async((str(log), "once"), task_id=task_id)
        assert again.get(timeout=10) == "once"
        after_everything_queued(log)
        assert run_counts(log)[task_id] == 1


# -- strangers: memory they can make the results actor spend (issue 9, item 10) ---------------


def test_ten_thousand_waits_for_unknown_ids_cost_little_and_one_peer_is_capped(tmp_path, log):
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        assert faults.quick.delay(str(log), "warm").get(timeout=10) == "warm"
        results_actor = psutil.Process(results_actor_pid(cluster))
        welcome = app.router_client().call(Cmd.HELLO, {}, 10)
        query = reachable(welcome["results"]["query"], cluster.router)
        before_mb = results_actor.memory_info().rss / 1e6
        strangers = [stranger(query) for _ in range(50)]
        try:
            for n in range(10_000):  # one random id per WAIT, from 50 peers
                protocol.send(strangers[n % 50], Message(
                    Cmd.WAIT, {"ids": [uuid.uuid4().hex], "timeout_s": 3600}))
            # A GET behind the WAITs on the same connection: once it is answered, every
            # WAIT before it has been handled.
            protocol.send(strangers[-1], Message(Cmd.GET, {"ids": ["x"], "rid": 1}))
            assert strangers[-1].poll(30_000), "the results actor did not answer"
            assert_grown_less_than(results_actor, before_mb, 30)
            assert faults.quick.delay(str(log), "still").get(timeout=10) == "still"

            # One peer asks for 100,000 more: it may hold 10,000 waits, and is told so.
            greedy = strangers[0]
            for _ in range(10):
                protocol.send(greedy, Message(Cmd.WAIT, {
                    "ids": [uuid.uuid4().hex for _ in range(10_000)], "timeout_s": 3600}))
            refusals = []
            for _ in range(10):
                assert greedy.poll(30_000), "no answer to an over-the-cap WAIT"
                refusals.append(protocol.recv(greedy)[1])
            assert {r.cmd for r in refusals} == {Cmd.ERROR}
            assert refusals[0].header["message"].startswith(
                "WAIT refused for 200 of 10000 ids: this peer already waits for 10000 tasks, "
                "the most one peer may")
            assert refusals[-1].header["message"].startswith("WAIT refused for 10000 of 10000")
            assert_grown_less_than(results_actor, before_mb, 30)
            assert faults.quick.delay(str(log), "after").get(timeout=10) == "after"
        finally:
            for sock in strangers:
                sock.close(linger=0)


def test_a_peer_that_never_reads_its_answers_cannot_make_the_results_actor_hold_them(
        tmp_path, log):
    """300 GETs of 10,000 unknown ids (half a megabyte of answer each), sent at once and
    never read: the results actor reads a few ahead and queues a few answers, not all
    (its peak grew by 1.1 GB before it bounded them, by about 22 MB since)."""
    with faults_cluster(tmp_path / "cluster", concurrency=1) as cluster:
        assert faults.quick.delay(str(log), "warm").get(timeout=10) == "warm"
        results_actor = psutil.Process(results_actor_pid(cluster))
        welcome = app.router_client().call(Cmd.HELLO, {}, 10)
        query = reachable(welcome["results"]["query"], cluster.router)
        before_mb = results_actor.memory_info().rss / 1e6
        deaf = stranger(query)
        deaf.rcvhwm = 1
        deaf.rcvbuf = 4096
        try:
            ids = [uuid.uuid4().hex for _ in range(10_000)]
            for n in range(300):
                protocol.send(deaf, Message(Cmd.GET, {"ids": ids, "rid": n}))
            peak_mb = peak_rss_until_idle(results_actor)
            assert peak_mb - before_mb < 100, f"the results actor grew to {peak_mb:.0f} MB"
            assert faults.quick.delay(str(log), "still").get(timeout=10) == "still"
        finally:
            deaf.close(linger=0)


def peak_rss_until_idle(process: psutil.Process) -> float:
    """The highest RSS (MB) seen until the process has used no CPU for a second."""
    peak = process.memory_info().rss
    busy = process.cpu_times()
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() - quiet_since < 1.0:
        assert time.monotonic() < deadline, "the process stayed busy for a minute"
        time.sleep(0.05)
        peak = max(peak, process.memory_info().rss)
        now = process.cpu_times()
        if now.user + now.system > busy.user + busy.system:
            busy = now
            quiet_since = time.monotonic()
    return peak / 1e6


def assert_grown_less_than(process: psutil.Process, before_mb: float, bound_mb: float) -> None:
    """The process's RSS exceeds ``before_mb`` by less than ``bound_mb`` once it has given
    back what it freed (it trims every few seconds)."""
    grown_mb = process.memory_info().rss / 1e6 - before_mb
    deadline = time.monotonic() + 15
    while grown_mb >= bound_mb and time.monotonic() < deadline:
        time.sleep(0.2)
        grown_mb = process.memory_info().rss / 1e6 - before_mb
    assert grown_mb < bound_mb, f"the results actor grew by {grown_mb:.0f} MB"


def stranger(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    return sock
