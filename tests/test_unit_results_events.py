"""The results actor's part in Celery's events, stepped: it tells the router which types
its subscribers want, as they come and go, and publishes the batches the router sends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from zq import protocol
from zq.protocol import EVENTS_TOPIC, WANT_TOPIC, Cmd, Message
from zq.results.actor import ResultsActor

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def router(results: ResultsActor) -> Iterator[zmq.Socket[bytes]]:
    """A DEALER standing in for the router on the event socket."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(results.endpoints["ingest"])
    try:
        yield sock
    finally:
        sock.close(linger=0)


def subscriber(results: ResultsActor, *topics: bytes) -> zmq.Socket[bytes]:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.connect(results.endpoints["pub"])
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    return sock


def step_until(results: ResultsActor, done: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        results.step(0.02)
        value = done()
        if value:
            return value
    pytest.fail(f"timed out waiting for {what}")


def wanted_told(router: zmq.Socket[bytes]) -> list[list[str]]:
    told = []
    while router.poll(0):
        _, msg = protocol.recv(router)
        if msg.cmd is Cmd.MONITOR:
            told.append(msg.header["types"])
    return told


def test_the_router_is_told_what_subscribers_want_as_they_come_and_go(results, router):
    protocol.send(router, Message(Cmd.EVENTS, {"events": []}))  # as a router starts
    assert step_until(results, lambda: wanted_told(router), "the first word") == [[]]
    failures = subscriber(results, WANT_TOPIC + b"task-failed")
    every = subscriber(results, WANT_TOPIC + b"*")
    told: list[list[str]] = []
    step_until(results, lambda: told.extend(wanted_told(router)) or
               (told and told[-1] == ["*", "task-failed"]), "both subscriptions")
    every.close(linger=0)  # a receiver gone: ZeroMQ unsubscribes it
    step_until(results, lambda: told.extend(wanted_told(router)) or
               told[-1] == ["task-failed"], "the one left")
    failures.close(linger=0)
    step_until(results, lambda: told.extend(wanted_told(router)) or told[-1] == [],
               "nobody")


def test_a_subscription_to_no_event_type_is_ignored(results, router, caplog):
    protocol.send(router, Message(Cmd.EVENTS, {"events": []}))
    step_until(results, lambda: wanted_told(router), "the first word")
    bogus = subscriber(results, WANT_TOPIC + b"task-exploded", WANT_TOPIC + b"\xff" * 300)
    try:
        step_until(results, lambda: "ignoring a subscription" in caplog.text, "the warning")
        assert results.stream.wanted == frozenset()
        assert wanted_told(router) == []
    finally:
        bogus.close(linger=0)


def test_batches_are_published_to_receivers_only(results, router):
    receiver = subscriber(results, EVENTS_TOPIC)
    try:
        step_until(results, lambda: results.stream.monitored, "the subscription")
        batch = [{"type": "task-sent", "clock": 1, "uuid": "a"}]
        protocol.send(router, Message(Cmd.EVENTS, {"events": [], "monitor": batch,
                                                   "epoch": "e1"}))
        published = step_until(results, lambda: receiver.poll(0) and
                               protocol.recv(receiver, routed=True)[1], "the batch")
        assert published.cmd is Cmd.MONITOR
        assert published.header == {"events": batch, "epoch": "e1"}
    finally:
        receiver.close(linger=0)


def test_a_watcher_of_every_task_gets_each_batch_of_changes_in_one_message():
    from zq.protocol import WATCH_ALL
    from zq.results.stream import Stream

    stream = Stream()
    rows = [{"id": f"t{i}", "state": "SUCCESS", "version": 1} for i in range(3)]
    # Nobody listens: numbered, nothing to send.
    assert [stream.publish(row) for row in rows] == [None] * 3 and stream.batch() is None
    stream.subscription(b"\x01" + WATCH_ALL)
    stream.subscription(b"\x01t1")
    sent = [stream.publish(row) for row in rows]
    # Only the task somebody watches on its own topic gets a message of its own...
    assert [s[0] if s else None for s in sent] == [None, b"t1", None]
    # ... and every change goes in one batch, numbered in order.
    topic, msg = stream.batch()
    assert topic == WATCH_ALL
    assert [(e["id"], e["seq"]) for e in msg.header["events"]] == [("t0", 4), ("t1", 5),
                                                                   ("t2", 6)]
    assert stream.batch() is None
