"""Parts of the results actor that strangers can make it spend memory on: the waiters,
and the WAIT handler that fills them (issue 9, item 10).

Waiters take ``now`` and deadlines as numbers, so no test sleeps. The handler tests step a
real ResultsActor on ipc:// endpoints under ``tmp_path``, one step at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from zq import protocol
from zq.protocol import Cmd, Message
from zq.results import ResultsActor
from zq.results import queries as results_queries
from zq.results.waiters import Waiters
from zq.states import SUCCESS

A, B = b"peer-a", b"peer-b"


# -- Waiters ---------------------------------------------------------------------------------

def test_a_finished_task_answers_every_peer_waiting_for_it_once() -> None:
    waiters = Waiters()
    assert waiters.add("t1", A, 100.0) and waiters.add("t1", B, 100.0)
    assert waiters.add("t2", A, 100.0)
    assert waiters.pop("t1") == {A, B}
    assert waiters.pop("t1") == set()
    assert waiters.pop("never-waited-for") == set()
    assert len(waiters) == 1


def test_an_answered_wait_frees_its_place_at_once() -> None:
    waiters = Waiters(limit=2, per_peer=2)
    assert waiters.add("t1", A, 100.0) and waiters.add("t2", A, 100.0)
    assert not waiters.add("t3", A, 100.0)
    waiters.pop("t1")
    assert len(waiters) == 1 and waiters.held_by(A) == 1
    assert waiters.add("t3", A, 100.0)


def test_asking_again_renews_the_wait_without_counting_it_twice() -> None:
    waiters = Waiters(limit=1)
    assert waiters.add("t1", A, 10.0)
    assert waiters.add("t1", A, 50.0)
    assert len(waiters) == 1 and waiters.held_by(A) == 1
    assert waiters.expire(30.0) == 0
    assert waiters.pop("t1") == {A}


def test_a_wait_ends_after_its_deadline_never_before() -> None:
    waiters = Waiters()
    waiters.add("t1", A, 10.5)
    waiters.add("t2", B, 20.0)
    assert waiters.expire(10.5) == 0
    assert waiters.expire(11.0) == 1
    assert waiters.pop("t1") == set()
    assert waiters.held_by(A) == 0 and len(waiters) == 1
    assert waiters.expire(21.0) == 1
    assert len(waiters) == 0 and waiters.pop("t2") == set()


def test_expired_and_answered_waits_leave_nothing_behind() -> None:
    waiters = Waiters()
    for i in range(1000):
        waiters.add(f"t{i}", bytes([i % 7]), 100.0 + i % 30)
    for i in range(0, 1000, 2):
        waiters.pop(f"t{i}")
    waiters.expire(1000.0)
    assert len(waiters) == 0
    assert waiters._by_task == {} and waiters._per_peer == {} and waiters._buckets == {}
    assert waiters._seconds == []


def test_one_peer_cannot_wait_for_more_than_its_share() -> None:
    waiters = Waiters(limit=100, per_peer=3)
    assert all(waiters.add(f"t{i}", A, 100.0) for i in range(3))
    assert not waiters.add("t3", A, 100.0)
    assert waiters.add("t0", A, 200.0), "renewing a wait it holds is not a new one"
    assert waiters.add("t3", B, 100.0), "other peers still have room"
    assert waiters.held_by(A) == 3 and waiters.held_by(B) == 1


def test_no_peer_waits_past_the_global_limit() -> None:
    waiters = Waiters(limit=5, per_peer=100)
    peers = [bytes([i]) for i in range(10)]
    accepted = [waiters.add(f"t{i}", peer, 100.0) for i, peer in enumerate(peers)]
    assert accepted == [True] * 5 + [False] * 5
    assert len(waiters) == 5
    waiters.expire(200.0)
    assert waiters.add("t9", peers[9], 300.0)


def test_the_default_limits_bound_the_memory_strangers_can_take() -> None:
    waiters = Waiters()
    assert waiters.limit <= 100_000 and waiters.per_peer <= 10_000


# -- the WAIT handler, stepped -----------------------------------------------------------------

@pytest.fixture
def client(results: ResultsActor) -> Iterator[zmq.Socket[bytes]]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(results.endpoints["query"])
    try:
        yield sock
    finally:
        sock.close(linger=0)


def ask(results: ResultsActor, sock: zmq.Socket[bytes], cmd: Cmd,
        header: dict[str, Any]) -> list[Message]:
    """Send one query, step the actor until it has read it, return what came back."""
    protocol.send(sock, Message(cmd, header))
    deadline = time.monotonic() + 5
    while not results.query.poll(0) and time.monotonic() < deadline:
        time.sleep(0.001)
    results.step(0.1)
    answers = []
    while sock.poll(50):
        answers.append(protocol.recv(sock)[1])
    return answers


def finish(results: ResultsActor, task_id: str) -> None:
    results._received.append({"id": task_id, "state": SUCCESS, "ts": time.time()})
    results._apply_received()


def test_a_wait_is_held_no_longer_than_the_servers_maximum(results, client) -> None:
    assert ask(results, client, Cmd.WAIT, {"ids": ["t1"], "timeout_s": 3600}) == []
    assert len(results.waiters) == 1
    results._expire(time.time() + results_queries._MAX_WAIT_S + 1.5)
    assert len(results.waiters) == 0


@pytest.mark.parametrize("timeout_s", [None, "soon", True, -5, float("nan")])
def test_a_wait_without_a_usable_timeout_gets_the_default(results, client, timeout_s) -> None:
    header: dict[str, Any] = {"ids": ["t1"]}
    if timeout_s is not None:
        header["timeout_s"] = timeout_s
    ask(results, client, Cmd.WAIT, header)
    results._expire(time.time() + results_queries._DEFAULT_WAIT_S - 1)
    assert len(results.waiters) == 1
    results._expire(time.time() + results_queries._DEFAULT_WAIT_S + 1.5)
    assert len(results.waiters) == 0


def test_an_answered_wait_is_gone_and_the_peer_is_told_once(results, client) -> None:
    ask(results, client, Cmd.WAIT, {"ids": ["t1", "t2"], "timeout_s": 20})
    finish(results, "t1")
    assert len(results.waiters) == 1
    assert client.poll(1000)
    answer = protocol.recv(client)[1]
    assert answer.cmd is Cmd.STATES and [r["id"] for r in answer.header["states"]] == ["t1"]


def test_a_peer_over_its_share_gets_one_clear_error_and_its_ready_results(
        results, client, monkeypatch) -> None:
    monkeypatch.setattr(results.waiters, "per_peer", 3)
    finish(results, "done")
    answers = ask(results, client, Cmd.WAIT,
                  {"ids": ["done", "t1", "t2", "t3", "t4", "t5"], "timeout_s": 20})
    assert [a.cmd for a in answers] == [Cmd.STATES, Cmd.ERROR]
    assert [r["id"] for r in answers[0].header["states"]] == ["done"]
    message = answers[1].header["message"]
    assert "\n" not in message
    assert message.startswith("WAIT refused for 2 of 6 ids: this peer already waits for 3")
    assert len(results.waiters) == 3
