"""Celery's events end to end: real router, results actor and actors, receivers in threads."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq

import zq
from tests.apps import basic
from tests.apps.basic import add, fail, reject_for_good, retry_once, wait_for_file
from tests.conftest import dedicated_cluster, wait_until
from zq import protocol
from zq.protocol import Cmd, Message
from zq.testing import Cluster

pytestmark = pytest.mark.timeout(90)

app = basic.app

COMMON = ("type", "timestamp", "hostname", "pid", "clock", "utcoffset", "local_received")


@pytest.fixture(scope="module")
def events_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two actors run with -E (task-started)."""
    with dedicated_cluster(tmp_path_factory.mktemp("events"), concurrency=2,
                           workers_args=["-E"]) as cluster:
        yield cluster


class Capture:
    """A receiver capturing in a thread of its own, every event kept in order."""

    def __init__(self, handlers: tuple[str, ...] = ("*",), also: Any = None):
        self.events: list[dict[str, Any]] = []
        self.also = also
        self.receiver = app.events.Receiver(handlers={kind: self._got for kind in handlers})
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _got(self, event: dict[str, Any]) -> None:
        if self.also is not None:
            self.also(event)
        self.events.append(event)

    def _run(self) -> None:
        try:
            self.receiver.capture()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            app.close()  # this thread's sockets

    def of(self, kind: str, task_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["type"] == kind
                and (task_id is None or e.get("uuid") == task_id)]

    def wait(self, kind: str, task_id: str | None = None, timeout_s: float = 10.0,
             **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            assert self.error is None, self.error
            for event in self.of(kind, task_id):
                if all(event.get(k) == v for k, v in fields.items()):
                    return event
            return None
        return wait_until(found, timeout_s, f"{kind} {task_id or ''} {fields}")


@contextmanager
def capturing(handlers: tuple[str, ...] = ("*",), ready: str | None = "worker-online",
              also: Any = None) -> Iterator[Capture]:
    capture = Capture(handlers, also)
    capture.thread.start()
    try:
        if ready is not None:
            # The snapshot names every actor alive: once it is in, the receiver is
            # registered and everything from here on reaches it.
            capture.wait(ready)
        yield capture
    finally:
        capture.receiver.should_stop = True
        capture.thread.join(5)
        assert not capture.thread.is_alive()


def has_fields(event: dict[str, Any], *names: str) -> None:
    missing = [n for n in (*COMMON, *names) if n not in event]
    assert not missing, f"{event['type']} lacks {missing}: {event}"


def test_a_succeeding_task_makes_sent_received_started_succeeded(events_cluster):
    with capturing() as capture:
        result = add.delay(2, 3)
        assert result.get(timeout=10) == 5
        succeeded = capture.wait("task-succeeded", result.id)
        sent = capture.wait("task-sent", result.id)
        received = capture.wait("task-received", result.id)
        started = capture.wait("task-started", result.id)
    has_fields(sent, "uuid", "name", "queue", "retries", "eta", "expires", "root_id")
    has_fields(received, "uuid", "name", "queue", "host")
    has_fields(started, "uuid", "queue")
    assert started["queue"] == "celery"
    has_fields(succeeded, "uuid", "result", "runtime", "queue")
    assert sent["name"] == "tests.apps.basic.add" and sent["queue"] == "celery"
    assert succeeded["result"] == "5"
    assert 0 <= succeeded["runtime"] < 5
    # The actor it ran on is named the same in each of them.
    assert received["hostname"] == started["hostname"] == succeeded["hostname"]
    assert received["pid"] == succeeded["pid"] != os.getpid()
    assert sent["clock"] < received["clock"] < started["clock"] < succeeded["clock"]
    assert isinstance(sent["utcoffset"], int)


def test_failing_retrying_and_rejecting_tasks(events_cluster, tmp_path):
    with capturing() as capture:
        failing = fail.delay("boom")
        with pytest.raises(ValueError):
            failing.get(timeout=10)
        retrying = retry_once.delay(7, str(tmp_path / "log"))
        assert retrying.get(timeout=10) == 7
        rejected = reject_for_good.delay()
        with pytest.raises(zq.Reject):
            rejected.get(timeout=10)
        failed = capture.wait("task-failed", failing.id)
        retried = capture.wait("task-retried", retrying.id)
        capture.wait("task-succeeded", retrying.id)
        rejection = capture.wait("task-rejected", rejected.id)
    has_fields(failed, "uuid", "exception", "traceback")
    assert failed["exception"] == "ValueError('boom')"
    assert "ValueError: boom" in failed["traceback"]
    has_fields(retried, "uuid", "exception", "traceback")
    assert "Retry" in retried["exception"]
    has_fields(rejection, "uuid", "requeue")
    assert rejection["requeue"] is False
    # The first attempt is sent, and the retry's second again, with its count.
    assert [e["retries"] for e in capture.of("task-sent", retrying.id)] == [0, 1]


def test_a_receiver_started_late_still_gets_what_was_sent_before_it(events_cluster):
    later = add.apply_async((1, 1), countdown=60)
    nowhere = add.apply_async((1, 2), queue="nobody-consumes-this")
    time.sleep(0.3)
    with capturing() as capture:
        capture.wait("task-sent", later.id)
        capture.wait("task-sent", nowhere.id, queue="nobody-consumes-this")
        app.control.revoke(later.id)
        app.control.revoke(nowhere.id)
        revoked = capture.wait("task-revoked", later.id)
        capture.wait("task-revoked", nowhere.id)
    has_fields(revoked, "uuid", "terminated", "signum", "expired")
    assert revoked["terminated"] is False and revoked["expired"] is False
    # Nothing twice: the snapshot and the stream do not overlap.
    assert len(capture.of("task-sent", later.id)) == 1


def test_an_expired_task_is_revoked_with_expired(events_cluster):
    with capturing() as capture:
        result = add.apply_async((1, 1), countdown=1.0, expires=0.5)
        event = capture.wait("task-revoked", result.id)
    assert event["expired"] is True and event["terminated"] is False


def test_workers_come_online_beat_and_a_handler_gets_only_its_types(events_cluster):
    with capturing(("worker-heartbeat", "task-succeeded"), ready=None) as capture:
        beat = capture.wait("worker-heartbeat")
        add.delay(1, 1).get(timeout=10)
        capture.wait("task-succeeded")
        time.sleep(1.5)
    has_fields(beat, "active", "processed", "loadavg", "freq", "sw_ident", "sw_ver",
               "sw_sys")
    assert {e["type"] for e in capture.events} == {"worker-heartbeat", "task-succeeded"}
    beats = [e for e in capture.events if e["type"] == "worker-heartbeat"]
    assert all(isinstance(e["processed"], int) and e["active"] in (0, 1) for e in beats)
    assert len(beats[-1]["loadavg"]) == 3


def test_state_keeps_tasks_and_workers(events_cluster):
    state = app.events.State()
    with capturing(also=state.event) as capture:
        ok = add.delay(4, 4)
        ok.get(timeout=10)
        capture.wait("task-succeeded", ok.id)
    task = state.tasks[ok.id]
    assert task.state == zq.states.SUCCESS and task.result == "8" and task.ready
    assert task.worker is not None and task.worker.alive
    assert task.received is not None and task.succeeded is not None
    assert len(state.alive_workers()) >= 2


def test_actor_killed_makes_worker_offline_and_task_failed_worker_lost(tmp_path):
    gate = tmp_path / "gate"
    with dedicated_cluster(tmp_path / "c", concurrency=2) as cluster, capturing() as capture:
        result = wait_for_file.delay(str(gate))
        received = capture.wait("task-received", result.id)
        os.kill(received["pid"], signal.SIGKILL)
        failed = capture.wait("task-failed", result.id)
        offline = capture.wait("worker-offline", hostname=received["hostname"])
        wait_until(lambda: cluster.actor_count() == 2, 10, "a replacement actor")
        online = [e for e in capture.of("worker-online")
                  if e["hostname"] != received["hostname"]]
    assert "WorkerLostError" in failed["exception"]
    assert not capture.of("task-started")  # no -E here: no message but the DONE
    assert failed["hostname"] == received["hostname"]
    has_fields(offline, "freq", "sw_ident")
    assert len(capture.of("worker-offline", None)) == 1
    assert len(online) >= 2  # the other actor, and the replacement


def test_malformed_registrations_and_subscriptions_harm_nothing(events_cluster):
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(events_cluster.router)
    sub = app.results_client().subscriber()
    try:
        for header in ({"types": "task-sent"}, {"types": ["no-such-event"]}, {},
                       {"types": [1, 2]}, {"types": ["*"] * 1000}):
            protocol.send(dealer, Message(Cmd.MONITOR, header))
            assert dealer.poll(5000)
            _, reply = protocol.recv(dealer)
            assert reply.cmd is Cmd.ERROR
            assert "\n" not in reply.header["message"]
            assert reply.header["message"].startswith("MONITOR refused")
        for topic in (b"\x00want:nonsense", b"\x00want:" + b"\xff" * 5000, b"\x00want:"):
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        # Batches of events that are not, straight to the results actor's ingest socket.
        ingest = ctx.socket(zmq.DEALER)
        ingest.linger = 0
        ingest.connect(app.router_client().call(Cmd.HELLO, {}, 5)["results"]["ingest"])
        for monitor in ([{"type": "bogus", "clock": 1}], "x", [{"type": "task-sent"}]):
            protocol.send(ingest, Message(Cmd.EVENTS, {"events": [], "monitor": monitor}))
        time.sleep(0.3)
        ingest.close(linger=0)
        with capturing() as capture:
            result = add.delay(5, 5)
            assert result.get(timeout=10) == 10
            capture.wait("task-succeeded", result.id)
    finally:
        sub.close(linger=0)
        dealer.close(linger=0)
    assert events_cluster.router_process.alive()
    log = events_cluster.router_process.log()
    assert "refusing MONITOR" in log
    assert "ignoring a subscription" in log
    assert log.count("dropping a batch of events") == 3
    assert "Traceback" not in log


def test_nothing_is_built_while_nobody_listens():
    from zq.router.book import Entry
    from zq.router.monitor import Monitor

    monitor = Monitor()
    entry = Entry({"id": "t1", "task": "x", "ct": "msgpack"}, None, b"")
    monitor.task_sent(entry, "celery")
    assert monitor.pending == [] and not monitor.on
    monitor.lease(["task-sent"], now=100.0)
    monitor.task_sent(entry, "celery")
    monitor.task_ended({"id": "t1", "state": "SUCCESS"}, entry, None)
    assert [e["type"] for e in monitor.take()] == ["task-sent"]
    monitor.expire(100.0 + 31)
    assert not monitor.on
    monitor.subscribed(frozenset({"*"}))
    assert monitor.wants("worker-offline")


def test_state_applies_late_events_without_going_back():
    state = zq.App().events.State()
    for kind, clock in (("task-succeeded", 3), ("task-received", 2), ("task-sent", 1)):
        state.event({"type": kind, "uuid": "a", "clock": clock, "timestamp": float(clock),
                     "hostname": "w", "name": "n", "result": "1"})
    task = state.tasks["a"]
    assert task.state == zq.states.SUCCESS
    assert task.name == "n" and task.received == 2.0 and task.sent == 1.0
    state.event({"type": "worker-online", "hostname": "w", "timestamp": time.time(),
                 "freq": 1.0})
    assert state.workers["w"].alive
    state.event({"type": "worker-offline", "hostname": "w", "timestamp": time.time()})
    assert not state.workers["w"].alive
