"""The router's chord rules, without sockets or a clock.

A client sends a chord as one batch, its body first (``chord_size``: how many parts it
waits for), then its parts (``chord``, ``chord_index``). The router holds the body until
every part ended SUCCESS (released with ``chord_results``) or one ended otherwise
(released at once with ``chord_error``). A task that replaced itself waits the same way
for its replacement's last task, and ends with its outcome (a relay).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.test_unit_router_rules import T0, Router
from zq import protocol, states
from zq.protocol import RELAY_INDEX
from zq.protocol import Cmd, Message
from zq.router import control, intake, members
from zq.router.book import INFLIGHT, QUEUED, SCHEDULED, WAITING

pytestmark = pytest.mark.timeout(10)

CT = "application/json"


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "task": "t", "ct": "application/x-msgpack", "queue": "celery",
            **fields}


def batch(r: Router, *headers: dict[str, Any], now: float = T0) -> Message:
    """Submit tasks in one batch, as a client sends a chord."""
    items = [[protocol.pack(header), b"args"] for header in headers]
    intake.on_submit(r.core, b"client", Message(Cmd.SUBMIT, {"id": "batch", "tasks": items}),
                     now)
    return r.replies_to(b"client")[-1]


def chord(r: Router, body: str = "body", parts: tuple[str, ...] = ("p0", "p1", "p2"),
          now: float = T0, part_fields: dict[str, dict[str, Any]] | None = None,
          **body_fields: Any) -> None:
    """Send a chord as the client does: one batch, the body first, then its parts."""
    part_fields = part_fields or {}
    reply = batch(r, task(body, chord_size=len(parts), **body_fields),
                  *(task(p, chord=body, chord_index=i, **part_fields.get(p, {}))
                    for i, p in enumerate(parts)), now=now)
    assert reply.cmd is Cmd.ACCEPTED and not reply.header["errors"]


def run(r: Router, actor: bytes = b"w", credit: int = 10, now: float = T0,
        **ready: Any) -> list[str]:
    """An actor asks for work; what it got."""
    r.ready(actor, credit=credit, now=now, **ready)
    return r.deal(now).get(actor, [])


def succeed(r: Router, actor: bytes, uid: str, result: bytes | None = None, retries: int = 0,
            now: float = T0, **record: Any) -> None:
    event = protocol.state_event(uid, states.SUCCESS, retries=retries, name="t",
                                 content_type=CT, body=result or uid.encode())
    members.on_done(r.core, actor, Message(Cmd.DONE, {"id": uid, "retries": retries,
                                                      "event": event, **record}), now)


def failed(r: Router, actor: bytes, uid: str, now: float = T0, **record: Any) -> None:
    event = protocol.state_event(uid, states.FAILURE, name="t",
                                 exc=protocol.exception_data("ValueError", "boom",
                                                             module="builtins"))
    members.on_done(r.core, actor, Message(Cmd.DONE, {"id": uid, "retries": 0,
                                                      "event": event, **record}), now)


def eventless(r: Router, actor: bytes, uid: str, **record: Any) -> None:
    """A DONE without an event: Ignore, or (``replaced``) the task replaced itself."""
    members.on_done(r.core, actor, Message(Cmd.DONE, {"id": uid, "retries": 0, **record}),
                    T0)


def body_of(r: Router, body: str = "body") -> Any:
    return r.core.book.tasks[body]


def parts_journaled(r: Router) -> list[tuple[Any, ...]]:
    return [rec for rec in r.journal.records if rec[0] == "C"]


def final(r: Router, task_id: str) -> dict[str, Any]:
    return [e for e in r.core.events if e["id"] == task_id][-1]


# -- counting parts ----------------------------------------------------------------------

def test_a_body_waits_for_every_part_and_gets_their_results_in_index_order():
    r = Router()
    chord(r)
    assert body_of(r).state == WAITING
    assert run(r) == ["p0", "p1", "p2"]  # the body is never handed out while it waits
    succeed(r, b"w", "p2", b"two")
    succeed(r, b"w", "p0", b"zero")
    assert body_of(r).state == WAITING
    assert parts_journaled(r) == [("C", "body", 2, states.SUCCESS),
                                  ("C", "body", 0, states.SUCCESS)]
    succeed(r, b"w", "p1", b"one")
    assert body_of(r).state == QUEUED
    assert body_of(r).header["chord_results"] == [[CT, b"zero"], [CT, b"one"], [CT, b"two"]]
    assert "chord_error" not in body_of(r).header
    assert r.deal() == {b"w": ["body"]}
    succeed(r, b"w", "body")
    assert "body" not in r.core.chords  # forgotten with the body
    assert not r.core.book.tasks


def test_a_part_succeeding_without_a_result_gives_none():
    r = Router()
    chord(r, parts=("p0",))
    run(r)
    event = protocol.state_event("p0", states.SUCCESS, name="t")
    members.on_done(r.core, b"w", Message(Cmd.DONE, {"id": "p0", "retries": 0,
                                                     "event": event}), T0)
    assert body_of(r).header["chord_results"] == [[None, None]]


def test_the_first_part_that_fails_releases_the_body_at_once_and_later_ones_are_ignored():
    r = Router()
    chord(r)
    run(r)
    succeed(r, b"w", "p0")
    failed(r, b"w", "p1")
    error = body_of(r).header["chord_error"]
    assert (error["id"], error["name"], error["state"]) == ("p1", "t", states.FAILURE)
    assert (error["exc"]["type"], error["exc"]["message"]) == ("ValueError", "boom")
    assert "chord_results" not in body_of(r).header
    assert body_of(r).state == QUEUED
    failed(r, b"w", "p2")
    assert body_of(r).header["chord_error"]["id"] == "p1"
    assert parts_journaled(r) == [("C", "body", 0, states.SUCCESS),
                                  ("C", "body", 1, states.FAILURE)]


def test_a_done_naming_a_chord_part_settles_that_part_rather_than_its_header_s():
    """A chain in a chord's header: its last link carries the membership; an earlier link
    that fails names the part in its DONE."""
    r = Router()
    chord(r, parts=("p0", "p1"))
    r.submit("link1")  # the first link of part 0's chain: no chord fields
    run(r)
    succeed(r, b"w", "p1")
    failed(r, b"w", "link1", chord=["body", 0])
    assert body_of(r).header["chord_error"]["id"] == "link1"


def test_a_done_s_chord_part_wins_over_the_header_s():
    r = Router()
    chord(r, parts=("p0", "p1"))
    run(r)
    succeed(r, b"w", "p1", b"first", chord=["body", 0])
    assert parts_journaled(r) == [("C", "body", 0, states.SUCCESS)]
    succeed(r, b"w", "p0", b"second", chord=["body", 1])
    assert body_of(r).header["chord_results"] == [[CT, b"first"], [CT, b"second"]]


def test_a_malformed_chord_part_in_a_done_is_ignored_and_the_header_s_counts(caplog):
    r = Router()
    chord(r, parts=("p0",))
    run(r)
    with caplog.at_level(logging.WARNING, "zq.router"):
        succeed(r, b"w", "p0", chord=["body", -1])
    assert "chord part" in caplog.text
    assert body_of(r).header["chord_results"] == [[CT, b"p0"]]


def test_a_retry_is_not_the_end_of_a_part_its_next_attempt_is():
    r = Router()
    chord(r, parts=("p0",))
    run(r)
    r.submit("p0", retries=1, chord="body", chord_index=0)  # the retry, sent before DONE
    retry = protocol.state_event("p0", states.RETRY, name="t",
                                 exc=protocol.exception_data("Retry", "again"))
    members.on_done(r.core, b"w", Message(Cmd.DONE, {"id": "p0", "retries": 0,
                                                     "event": retry}), T0)
    assert body_of(r).state == WAITING and not parts_journaled(r)
    assert r.deal() == {b"w": ["p0"]}
    succeed(r, b"w", "p0", b"done", retries=1)
    assert body_of(r).header["chord_results"] == [[CT, b"done"]]


def _error_after(r: Router) -> dict[str, Any]:
    assert body_of(r).state == QUEUED
    error: dict[str, Any] = body_of(r).header["chord_error"]
    return error


def test_a_purged_part_fails_its_chord_and_the_waiting_body_is_not_purged():
    r = Router()
    chord(r, parts=("p0", "p1"))
    assert r.control(op="purge").header["purged"] == 2
    error = _error_after(r)
    assert (error["id"], error["state"]) == ("p0", states.REVOKED)
    assert error["exc"]["type"] == "TaskRevokedError"
    assert error["exc"]["message"] == "task p0 was purged"


def test_a_part_whose_done_has_no_event_fails_its_chord_as_ignored():
    r = Router()
    chord(r, parts=("p0", "p1"))
    run(r)
    eventless(r, b"w", "p0")
    error = _error_after(r)
    assert (error["id"], error["state"]) == ("p0", "IGNORED")
    assert error["exc"]["type"] == "Ignore"
    assert error["exc"]["message"] == "task p0 ended without a result"
    assert parts_journaled(r) == [("C", "body", 0, "IGNORED")]


def test_a_revoked_part_fails_its_chord():
    r = Router()
    chord(r, parts=("p0", "p1"))
    r.control(op="revoke", ids=["p1"])
    error = _error_after(r)
    assert (error["id"], error["state"]) == ("p1", states.REVOKED)


def test_an_expired_part_fails_its_chord():
    r = Router()
    chord(r, parts=("p0", "p1"), part_fields={"p1": {"expires": T0 + 1}})
    r.deal(T0 + 2)
    error = _error_after(r)
    assert (error["id"], error["state"]) == ("p1", states.REVOKED)
    assert "expired" in error["exc"]["message"]


def test_a_part_with_no_route_fails_its_chord_as_it_comes_in():
    r = Router()
    chord(r, parts=("p0", "p1"),
          part_fields={"p1": {"queue": "", "exchange": "nowhere", "rk": "k"}})
    error = _error_after(r)
    assert (error["id"], error["state"]) == ("p1", states.FAILURE)
    assert error["exc"]["type"] == "NoRoute"


def test_a_part_revoked_before_it_came_in_fails_its_chord():
    r = Router()
    r.control(op="revoke", ids=["p0"])
    chord(r, parts=("p0", "p1"))
    assert _error_after(r)["state"] == states.REVOKED


def _lost(r: Router, actor: bytes, **fields: Any) -> None:
    members.on_lost(r.core, b"h", Message(Cmd.LOST, {"actor": actor, "reason": "SIGKILL",
                                                     **fields}), T0)


def test_a_part_lost_with_its_actor_fails_its_chord():
    r = Router()
    chord(r, parts=("p0", "p1"))
    assert run(r, credit=1, host="h", supervised=True) == ["p0"]
    _lost(r, b"w")
    error = _error_after(r)
    assert (error["id"], error["exc"]["type"]) == ("p0", "WorkerLostError")


def test_an_acks_late_part_fails_its_chord_only_past_its_redeliveries():
    r = Router(max_redeliveries=1)
    chord(r, parts=("p0",), part_fields={"p0": {"acks_late": True}})
    assert run(r, b"w1", credit=1, host="h", supervised=True) == ["p0"]
    _lost(r, b"w1")
    assert body_of(r).state == WAITING  # redelivered: not an end
    assert run(r, b"w2", credit=1, host="h", supervised=True) == ["p0"]
    _lost(r, b"w2")
    error = _error_after(r)
    assert error["exc"]["type"] == "WorkerLostError"
    assert "max_redeliveries=1" in error["exc"]["message"]


def test_a_part_past_its_time_limit_fails_its_chord():
    r = Router()
    chord(r, parts=("p0",), part_fields={"p0": {"time_limit": 5}})
    run(r, credit=1, host="h", supervised=True)
    _lost(r, b"w", error="TimeLimitExceeded")
    assert _error_after(r)["exc"]["type"] == "TimeLimitExceeded"


def test_a_presumed_loss_fails_the_chord_and_the_real_outcome_later_does_not_count():
    r = Router(host_timeout_s=4.0)
    chord(r, parts=("p0",))
    run(r, credit=1, host="h", supervised=True)
    members.on_heartbeat(r.core, b"h", Message(Cmd.HEARTBEAT, {"host": "h",
                                                               "actors": [b"w"]}), T0)
    members.housekeeping(r.core, T0 + 5)
    error = _error_after(r)
    assert error["exc"]["type"] == "WorkerLostError"
    succeed(r, b"w", "p0", now=T0 + 6)  # the host came back with the real outcome
    assert body_of(r).header["chord_error"] == error
    assert parts_journaled(r) == [("C", "body", 0, states.FAILURE)]


def test_a_late_done_naming_a_part_counts_it_when_it_is_the_first():
    """A chain link the router gave up on (its host went silent) that really failed: the
    link is no part by its header, and its late DONE is the only word that the chain in
    the chord's header is over."""
    r = Router(host_timeout_s=4.0)
    batch(r, task("body", chord_size=1), task("link1"))
    assert run(r, credit=1, host="h", supervised=True) == ["link1"]
    members.on_heartbeat(r.core, b"h", Message(Cmd.HEARTBEAT, {"host": "h",
                                                               "actors": [b"w"]}), T0)
    members.housekeeping(r.core, T0 + 5)
    assert final(r, "link1")["presumed"] is True
    assert body_of(r).state == WAITING
    failed(r, b"w", "link1", now=T0 + 6, chord=["body", 0])
    assert body_of(r).header["chord_error"]["id"] == "link1"


# -- what is not counted -----------------------------------------------------------------

def test_a_part_of_a_body_the_router_does_not_hold_is_ignored():
    r = Router()
    r.submit("orphan", chord="ghost", chord_index=0)
    run(r)
    succeed(r, b"w", "orphan")
    assert not parts_journaled(r) and "ghost" not in r.core.chords


def test_a_part_that_ends_after_its_body_ended_is_ignored():
    r = Router()
    chord(r, parts=("p0", "p1"))
    run(r)
    failed(r, b"w", "p0")
    assert r.deal() == {b"w": ["body"]}
    failed(r, b"w", "body")
    succeed(r, b"w", "p1")
    assert "body" not in r.core.chords
    assert parts_journaled(r) == [("C", "body", 0, states.FAILURE)]


def test_the_first_outcome_of_a_part_counts():
    r = Router()
    chord(r, parts=("p0", "p1"))
    r.submit("again", chord="body", chord_index=0)
    run(r)
    succeed(r, b"w", "p0", b"first")
    failed(r, b"w", "again")
    assert body_of(r).state == WAITING
    succeed(r, b"w", "p1")
    assert body_of(r).header["chord_results"][0] == [CT, b"first"]


def test_a_part_index_past_the_chord_s_size_is_ignored_with_a_warning(caplog):
    r = Router()
    chord(r, parts=("p0", "p1"))
    r.submit("extra", chord="body", chord_index=2)
    run(r)
    with caplog.at_level(logging.WARNING, "zq.router"):
        failed(r, b"w", "extra")
    assert "part 2 of chord body" in caplog.text
    assert body_of(r).state == WAITING and not parts_journaled(r)


# -- the waiting body --------------------------------------------------------------------

def test_revoking_a_waiting_body_ends_it_revoked_and_its_parts_are_ignored():
    r = Router()
    chord(r, parts=("p0", "p1"))
    assert r.control(op="stats").header["chords_waiting"] == 1
    r.control(op="revoke", ids=["body"])
    assert "body" not in r.core.book.tasks
    assert final(r, "body")["state"] == states.REVOKED
    assert r.control(op="stats").header["chords_waiting"] == 0
    run(r)
    succeed(r, b"w", "p0"), succeed(r, b"w", "p1")
    assert not parts_journaled(r)


def test_a_body_released_with_an_eta_waits_for_it():
    r = Router()
    chord(r, parts=("p0",), eta=T0 + 10)
    assert body_of(r).state == WAITING
    run(r)
    succeed(r, b"w", "p0", now=T0 + 1)
    assert body_of(r).state == SCHEDULED
    assert r.deal(T0 + 9) == {}
    assert r.deal(T0 + 10) == {b"w": ["body"]}


def test_a_body_released_past_its_eta_is_queued_at_once():
    r = Router()
    chord(r, parts=("p0",), eta=T0 + 1)
    run(r)
    succeed(r, b"w", "p0", now=T0 + 5)
    assert r.deal(T0 + 5) == {b"w": ["body"]}
    assert body_of(r).header["chord_results"] == [[CT, b"p0"]]


def test_a_body_released_past_its_expiry_is_expired():
    r = Router()
    chord(r, parts=("p0",), expires=T0 + 3)
    run(r)
    succeed(r, b"w", "p0", now=T0 + 5)
    assert r.deal(T0 + 5) == {}
    assert final(r, "body")["state"] == states.REVOKED
    assert "body" not in r.core.book.tasks


def test_a_retry_of_a_released_body_is_released_again_with_the_same_results():
    """A body that retries is sent again by its worker before its DONE: whether the retry
    carries the results or only ``chord_size``, it runs with them."""
    r = Router()
    chord(r, parts=("p0",))
    run(r)
    succeed(r, b"w", "p0", b"zero")
    assert r.deal() == {b"w": ["body"]}
    r.submit("body", retries=1, chord_size=1)
    assert body_of(r).header["chord_results"] == [[CT, b"zero"]]
    retry = protocol.state_event("body", states.RETRY, name="t",
                                 exc=protocol.exception_data("Retry", "again"))
    members.on_done(r.core, b"w", Message(Cmd.DONE, {"id": "body", "retries": 0,
                                                     "event": retry}), T0)
    assert r.deal() == {b"w": ["body"]}
    succeed(r, b"w", "body", retries=1)
    assert "body" not in r.core.chords and not r.core.book.tasks


def test_a_body_is_never_claimed_by_an_actor_while_it_waits():
    r = Router()
    chord(r, parts=("p0",))
    members.on_ready(r.core, b"w", Message(Cmd.READY, {
        "queues": ["celery"], "credit": 1, "host": "h", "pid": 1,
        "holding": [["body", 0]]}), T0)
    assert r.replies_to(b"w")[-1].header["drop"] == [["body", 0]]
    assert body_of(r).state == WAITING


def test_a_body_that_is_a_part_of_another_chord_counts_when_it_ends():
    """Chord A's body is part 0 of chord B."""
    r = Router()
    reply = batch(r, task("B", chord_size=2),
                  task("A", chord_size=1, chord="B", chord_index=0),
                  task("a0", chord="A", chord_index=0),
                  task("b1", chord="B", chord_index=1))
    assert reply.header["ids"] == ["B", "A", "a0", "b1"]
    assert run(r) == ["a0", "b1"]
    succeed(r, b"w", "b1", b"b1")
    succeed(r, b"w", "a0", b"a0")
    assert r.core.book.tasks["B"].state == WAITING
    assert r.core.book.tasks["A"].header["chord_results"] == [[CT, b"a0"]]
    assert r.deal() == {b"w": ["A"]}
    succeed(r, b"w", "A", b"sum")
    assert r.core.book.tasks["B"].header["chord_results"] == [[CT, b"sum"], [CT, b"b1"]]


def test_a_failure_goes_up_through_nested_chords():
    r = Router()
    batch(r, task("B", chord_size=1), task("A", chord_size=1, chord="B", chord_index=0),
          task("a0", chord="A", chord_index=0))
    r.control(op="revoke", ids=["A"])
    error = r.core.book.tasks["B"].header["chord_error"]
    assert (error["id"], error["state"]) == ("A", states.REVOKED)


# -- relays: a task that replaced itself ends with its replacement -----------------------

def _replacing(r: Router, **header: Any) -> None:
    r.submit("x", **header)
    assert run(r, credit=1) == ["x"]
    # The replacement's last task (here the only one) carries x as its chord.
    r.submit("y", chord="x", chord_index=RELAY_INDEX)


def test_a_replaced_task_waits_for_its_replacement_and_ends_with_its_outcome():
    r = Router()
    _replacing(r)
    eventless(r, b"w", "x", replaced=True)
    entry = r.core.book.tasks["x"]
    assert entry.state == WAITING
    assert (entry.header["chord_size"], entry.header["relay"]) == (1, True)
    assert r.journal.records.count(("A", "x")) == 2  # its new header, journaled
    assert r.control(op="stats").header["chords_waiting"] == 1
    assert r.deal() == {b"w": ["y"]}
    succeed(r, b"w", "y", b"42")
    assert "x" not in r.core.book.tasks
    event = final(r, "x")
    assert event == {"id": "x", "state": states.SUCCESS, "retries": 0, "name": "t",
                     "ct": CT, "body": b"42"}
    assert ("D", "x", 0) in r.journal.records
    assert "x" not in r.core.chords


def test_a_relay_ends_with_its_replacement_s_failure_as_its_own():
    r = Router()
    _replacing(r)
    eventless(r, b"w", "x", replaced=True)
    r.deal()
    failed(r, b"w", "y")
    event = final(r, "x")
    assert event["state"] == states.FAILURE and event["exc"]["type"] == "ValueError"
    assert "chord_error" not in event


def test_a_replacement_that_ends_before_the_replaced_done_arrives_ends_the_relay_at_once():
    r = Router()
    _replacing(r)
    r.ready(b"w2")
    assert r.deal() == {b"w2": ["y"]}
    succeed(r, b"w2", "y", b"early")
    assert r.core.book.tasks["x"].state == INFLIGHT  # counted for it all the same
    assert parts_journaled(r) == [("C", "x", RELAY_INDEX, states.SUCCESS)]
    eventless(r, b"w", "x", replaced=True)
    assert "x" not in r.core.book.tasks
    assert final(r, "x")["body"] == b"early"


def test_a_relay_s_event_carries_no_copy_key():
    r = Router()
    _replacing(r)
    eventless(r, b"w", "x", replaced=True)
    r.deal()
    event = protocol.state_event("y", states.SUCCESS, name="t", copy="y\x1fq", body=b"1",
                                 content_type=CT)
    members.on_done(r.core, b"w", Message(Cmd.DONE, {"id": "y", "event": event}), T0)
    assert final(r, "x") == {"id": "x", "state": states.SUCCESS, "retries": 0, "name": "t",
                             "ct": CT, "body": b"1"}


def test_a_relay_that_is_a_chord_part_counts_when_its_replacement_ends():
    r = Router()
    batch(r, task("body", chord_size=1), task("x", chord="body", chord_index=0))
    assert run(r, credit=1) == ["x"]
    r.submit("y", chord="x", chord_index=RELAY_INDEX)
    eventless(r, b"w", "x", replaced=True)
    assert body_of(r).state == WAITING
    r.deal()
    succeed(r, b"w", "y", b"deep")
    assert body_of(r).header["chord_results"] == [[CT, b"deep"]]


def test_a_revoked_relay_ends_revoked_and_its_replacement_s_end_is_ignored():
    r = Router()
    _replacing(r)
    eventless(r, b"w", "x", replaced=True)
    r.control(op="revoke", ids=["x"])
    assert final(r, "x")["state"] == states.REVOKED
    r.deal()
    succeed(r, b"w", "y")
    assert final(r, "x")["state"] == states.REVOKED


def test_a_replaced_done_handed_over_again_after_a_restart_makes_the_queued_copy_a_relay():
    r = Router()
    r.submit("x")  # as replayed from the journal after a restart: queued
    members.on_ready(r.core, b"w", Message(Cmd.READY, {
        "queues": ["celery"], "credit": 1, "host": "h", "pid": 1, "holding": [],
        "done": [{"id": "x", "retries": 0, "replaced": True}]}), T0)
    assert r.replies_to(b"w")[-1].header["confirm"] == [["x", 0]]
    assert r.core.book.tasks["x"].state == WAITING
    assert r.deal() == {}


def test_a_relay_from_a_client_header_waits_for_its_part():
    r = Router()
    batch(r, task("x", chord_size=1, relay=True), task("y", chord="x", chord_index=RELAY_INDEX))
    assert run(r) == ["y"]
    succeed(r, b"w", "y", b"7")
    assert final(r, "x")["body"] == b"7"
    assert "x" not in r.core.book.tasks


def test_many_nested_relays_end_without_recursing_per_level():
    """A task replacing itself again and again: the last replacement ends them all."""
    r = Router()
    depth = 2000
    r.submit("t0")
    for level in range(depth):
        assert run(r, credit=1) == [f"t{level}"]
        r.submit(f"t{level + 1}", chord=f"t{level}", chord_index=RELAY_INDEX)
        eventless(r, b"w", f"t{level}", replaced=True)
    assert run(r, credit=1) == [f"t{depth}"]
    succeed(r, b"w", f"t{depth}", b"bottom")
    assert not r.core.book.tasks and not r.core.chords.bodies
    assert final(r, "t0")["body"] == b"bottom"


def test_stats_count_the_waiting_bodies():
    r = Router()
    chord(r, "b1", ("p0",))
    chord(r, "b2", ("q0",))
    assert r.control(op="stats").header["chords_waiting"] == 2
    run(r)
    succeed(r, b"w", "p0")
    assert r.control(op="stats").header["chords_waiting"] == 1
    assert control.stats(r.core, {}, T0)["tasks"] == 3


def test_a_relay_placed_past_its_expiry_still_waits_for_its_replacement():
    """As after a restart: it ran already (it replaced itself), and expiry is about
    starting."""
    r = Router()
    batch(r, task("x", chord_size=1, relay=True, expires=T0 + 1),
          task("y", chord="x", chord_index=RELAY_INDEX), now=T0 + 5)
    assert r.core.book.tasks["x"].state == WAITING
    run(r, now=T0 + 5)
    succeed(r, b"w", "y", b"late", now=T0 + 6)
    assert final(r, "x")["state"] == states.SUCCESS


def test_a_journal_rewrite_keeps_the_parts_of_bodies_held_waiting_or_released():
    r = Router()
    chord(r, "waiting", ("a0", "a1"))
    chord(r, "released", ("b0",))
    chord(r, "finished", ("c0",))
    run(r)
    succeed(r, b"w", "a0"), succeed(r, b"w", "b0"), succeed(r, b"w", "c0")
    r.deal()
    succeed(r, b"w", "finished")
    assert [(body, index) for body, index, _ in r.core.held_parts()] == [
        ("waiting", 0), ("released", 0)]


def test_a_chain_link_before_the_last_settles_the_part_only_by_failing():
    """A chain in a header: its first link carries ``chord_chain``. The router failing it
    (its actor lost) fails the chord, though the chain's last link never comes."""
    r = Router()
    reply = batch(r, task("body", chord_size=2),
                  task("link0", chord_chain=["body", 0]), task("p1", chord="body",
                                                               chord_index=1))
    assert reply.cmd is Cmd.ACCEPTED and not reply.header["errors"]
    assert run(r, credit=1, host="h", supervised=True) == ["link0"]
    _lost(r, b"w")
    error = _error_after(r)
    assert (error["id"], error["exc"]["type"]) == ("link0", "WorkerLostError")

    r = Router()
    batch(r, task("body", chord_size=1), task("link0", chord_chain=["body", 0]))
    assert run(r) == ["link0"]
    succeed(r, b"w", "link0")
    assert body_of(r).state == WAITING  # its success is the next link's to give


def test_a_malformed_chord_chain_is_refused():
    r = Router()
    reply = batch(r, task("x", chord_chain=["body"]))
    assert "chord_chain" in reply.header["errors"][0][2]


def test_a_released_body_that_replaces_itself_relays_its_replacement_not_its_parts():
    """A chord body released with its header's results calls replace: what it relays is
    its replacement's outcome, never one of its own header's parts."""
    r = Router()
    chord(r, parts=("p0",))
    assert run(r) == ["p0"]
    succeed(r, b"w", "p0", b"part")
    assert r.deal() == {b"w": ["body"]}
    r.submit("y", chord="body", chord_index=RELAY_INDEX)
    eventless(r, b"w", "body", replaced=True)
    entry = body_of(r)
    assert entry.state == WAITING and "chord_results" not in entry.header
    assert r.deal() == {b"w": ["y"]}
    succeed(r, b"w", "y", b"replacement")
    assert final(r, "body")["body"] == b"replacement"
