"""Stacking short tasks on an actor, and what a lost actor may have started (router rules
without sockets: see tests/test_unit_router_rules.py for the harness)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zq import protocol, states
from zq.protocol import Cmd, Message
from zq.router import members
from zq.router.book import QUEUED
from zq.router.pace import BUDGET_S, MAX_DEPTH, MAX_NAMES, SHORT_S, Pace
from tests.test_unit_router_rules import T0, Router

pytestmark = pytest.mark.timeout(10)


# -- the pace of a task name -------------------------------------------------------------

def test_a_name_never_seen_is_not_short_and_gets_a_depth_of_one():
    pace = Pace()
    assert not pace.short("t")
    assert pace.depth(["t"]) == 1


def test_a_longer_runtime_counts_at_once_and_a_shorter_one_pulls_down_slowly():
    pace = Pace()
    pace.observe("t", 0.001)
    assert pace.short("t")
    pace.observe("t", 1.0)
    assert pace.expected("t") == 1.0 and not pace.short("t")
    for _ in range(40):
        pace.observe("t", 0.001)
    assert pace.short("t")


def test_depth_is_the_budget_over_the_slowest_between_two_and_the_maximum():
    pace = Pace()
    pace.observe("fast", 0.0)
    pace.observe("ms", 0.001)
    pace.observe("edge", SHORT_S)
    assert pace.depth(["fast"]) == MAX_DEPTH
    assert pace.depth(["fast", "ms"]) == min(MAX_DEPTH, int(BUDGET_S / 0.001))
    assert pace.depth(["edge"]) == 2
    assert pace.depth(["fast", "unknown"]) == 1


@pytest.mark.parametrize("runtime", [-1.0, math.nan, math.inf, "1", None, True, [1]])
def test_a_runtime_that_is_not_a_duration_is_ignored(runtime):
    pace = Pace()
    pace.observe("t", runtime)
    assert pace.expected("t") is None


def test_names_kept_are_bounded():
    pace = Pace()
    for index in range(MAX_NAMES + 10):
        pace.observe(f"t{index}", 0.001)
    assert pace.expected("t0") is None
    assert pace.expected(f"t{MAX_NAMES + 9}") == 0.001


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=50))
def test_the_expected_runtime_is_within_what_was_seen(runtimes):
    pace = Pace()
    for runtime in runtimes:
        pace.observe("t", runtime)
    expected = pace.expected("t")
    assert expected is not None and min(runtimes) <= expected <= max(runtimes)
    assert 1 <= pace.depth(["t"]) <= MAX_DEPTH


# -- stacking ----------------------------------------------------------------------------

def _known(r: Router, name: str, runtime: float) -> None:
    r.core.pace.observe(name, runtime)


def _task_message(r: Router, actor: bytes) -> list[str]:
    return [uid for uid in r.deal().get(actor, [])]


def test_short_tasks_are_stacked_beyond_the_credit_and_granted():
    r = Router()
    _known(r, "t", 0.0001)
    for index in range(40):
        r.submit(f"s{index}")
    r.ready(b"w", credit=1)
    got = r.deal()[b"w"]
    assert got == [f"s{index}" for index in range(MAX_DEPTH)]
    actor = r.core.actors[b"w"]
    # The first goes on its credit and waits for confirmations; the rest are granted.
    assert actor.granted == {(f"s{index}", 0) for index in range(1, MAX_DEPTH)}
    assert r.core.book.tasks["s39"].state == QUEUED


def test_a_task_of_a_name_not_seen_yet_goes_alone():
    r = Router()
    for index in range(3):
        r.submit(f"n{index}")
    r.ready(b"w", credit=1)
    assert r.deal() == {b"w": ["n0"]}
    assert r.core.actors[b"w"].granted == set()


def test_nothing_is_stacked_behind_a_long_task_and_a_long_one_is_not_stacked():
    r = Router()
    _known(r, "t", 0.0001)
    _known(r, "slow", 2.0)
    r.submit("long", task="slow")
    r.submit("short1")
    r.submit("short2")
    r.ready(b"a", credit=1)
    r.ready(b"b", credit=1)
    assert r.deal() == {b"a": ["long"], b"b": ["short1", "short2"]}
    r.submit("long2", task="slow")
    r.submit("short3")
    # b holds short tasks: the long one may not be stacked there, and nothing may go
    # behind a's long task; it waits for credit.
    assert r.deal() == {}
    r.done(b"b", "short1", runtime=0.0001)
    r.done(b"b", "short2", runtime=0.0001)
    assert r.deal() == {b"b": ["long2"]}


def test_a_task_that_ran_long_shrinks_the_window_at_once():
    r = Router()
    _known(r, "t", 0.0001)
    for index in range(4):
        r.submit(f"s{index}")
    r.ready(b"w", credit=1)
    assert r.deal() == {b"w": ["s0", "s1", "s2", "s3"]}
    r.done(b"w", "s0", runtime=1.5)
    for index in range(4, 8):
        r.submit(f"s{index}")
    # Its name is not short any more: nothing is stacked, and the next waits for credit.
    assert r.deal() == {}
    assert r.core.book.tasks["s4"].state == QUEUED


def test_stacking_stops_at_the_depth_for_the_slowest_held():
    r = Router()
    _known(r, "t", 0.004)  # 20 ms / 4 ms: 5 deep
    for index in range(10):
        r.submit(f"s{index}")
    r.ready(b"w", credit=1)
    assert r.deal() == {b"w": [f"s{index}" for index in range(5)]}


def test_an_actor_seen_leaving_gets_nothing_stacked():
    r = Router()
    _known(r, "t", 0.0001)
    r.submit("a")
    r.ready(b"w", credit=1, host="h", supervised=True)
    assert r.deal() == {b"w": ["a"]}
    members.on_lost(r.core, b"h", Message(Cmd.LOST, {"actor": b"w", "clean": True}), T0)
    r.submit("b")
    r.done(b"w", "a", runtime=0.0001)
    assert r.deal() == {}


def test_a_done_confirmation_rides_with_the_next_task_when_only_granted_tasks_wait():
    r = Router()
    _known(r, "t", 0.0001)
    for index in range(3):
        r.submit(f"s{index}")
    r.ready(b"w", credit=1)
    r.deal()
    r.core.replies.clear()
    r.done(b"w", "s0", runtime=0.0001)
    # s1 and s2 are granted: no CONFIRM message now; it goes with the next TASK.
    assert [m.cmd for m in r.replies_to(b"w")] == []
    assert r.core.take_confirms(b"w") == [["s0", 0]]


# -- what a lost actor may have started --------------------------------------------------

def _stacked(r: Router, count: int, **header) -> list[str]:
    _known(r, "t", 0.0001)
    ids = [f"s{index}" for index in range(count)]
    for task_id in ids:
        r.submit(task_id, **header)
    r.ready(b"w", credit=1, host="h", supervised=True)
    assert r.deal()[b"w"] == ids
    return ids


def _lost(r: Router, started: str | None, **header) -> None:
    if started is not None:
        header["started"] = started
    members.on_lost(r.core, b"h", Message(Cmd.LOST, {"actor": b"w", "reason": "SIGKILL",
                                                     **header}), T0)


def test_the_task_running_at_a_kill_fails_and_those_after_it_go_back_unmarked():
    r = Router()
    _stacked(r, 5)
    r.done(b"w", "s0", runtime=0.0001)
    r.done(b"w", "s1", runtime=0.0001)
    _lost(r, protocol.attempt_label("s2", 0))
    assert r.final_exc("s2")["type"] == "WorkerLostError"
    for task_id in ("s3", "s4"):
        entry = r.core.book.tasks[task_id]
        assert entry.state == QUEUED and "redelivered" not in entry.header
    assert b"w" not in r.core.actors


def test_tasks_that_ended_before_the_running_one_wait_for_their_dones():
    r = Router()
    _stacked(r, 5)
    # s0 and s1 ended, their DONEs still on their way when the LOST came; s2 ran.
    _lost(r, protocol.attempt_label("s2", 0))
    assert r.states_of("s0") == [states.SENT] and r.states_of("s1") == [states.SENT]
    assert r.core.actors[b"w"].departed_at == T0
    assert list(r.core.actors[b"w"].inflight) == [("s0", 0), ("s1", 0)]
    r.done(b"w", "s0", runtime=0.0001)
    r.done(b"w", "s1", runtime=0.0001)
    assert r.states_of("s0")[-1] == r.states_of("s1")[-1] == states.SUCCESS
    assert r.deal() == {}  # a departed actor is given nothing
    # Its DONEs all came: settled at the next housekeeping without judging anything.
    members.housekeeping(r.core, T0 + 3)
    assert b"w" not in r.core.actors


def test_an_ended_task_whose_done_never_comes_is_judged_lost_after_the_grace():
    r = Router()
    _stacked(r, 3)
    _lost(r, protocol.ended_label(protocol.attempt_label("s1", 0)))
    # s1 ended too (the label says so): it waits with s0; s2 never started.
    assert list(r.core.actors[b"w"].inflight) == [("s0", 0), ("s1", 0)]
    assert r.core.book.tasks["s2"].state == QUEUED
    members.housekeeping(r.core, T0 + 3)
    assert r.final_exc("s0")["type"] == r.final_exc("s1")["type"] == "WorkerLostError"


def test_a_label_for_a_task_already_done_means_nothing_held_started():
    r = Router()
    _stacked(r, 3)
    r.done(b"w", "s0", runtime=0.0001)
    _lost(r, protocol.ended_label(protocol.attempt_label("s0", 0)))
    assert all(r.core.book.tasks[t].state == QUEUED for t in ("s1", "s2"))
    assert b"w" not in r.core.actors


def test_an_empty_label_means_the_actor_started_nothing():
    r = Router()
    _stacked(r, 3)
    _lost(r, "")
    assert all(r.core.book.tasks[t].state == QUEUED for t in ("s0", "s1", "s2"))


def test_a_silent_host_s_granted_tasks_are_presumed_started_the_rest_go_back():
    r = Router(host_timeout_s=4)
    _known(r, "t", 0.0001)
    _known(r, "slow", 5.0)
    r.submit("s0")
    r.submit("s1")
    r.submit("long", task="slow")
    r.ready(b"w", credit=3, host="h", supervised=True)
    assert r.deal() == {b"w": ["s0", "s1", "long"]}
    assert r.core.actors[b"w"].granted == {("s1", 0)}
    r.core.hosts["h"].last_seen = T0
    members.housekeeping(r.core, T0 + 5)
    for task_id in ("s0", "s1"):
        event = [e for e in r.core.events if e["id"] == task_id][-1]
        assert event["state"] == states.FAILURE and event.get("presumed") is True
    # Behind a task that is not granted nothing can have started.
    assert r.core.book.tasks["long"].state == QUEUED


def test_a_granted_acks_late_task_of_a_silent_host_is_redelivered():
    r = Router(host_timeout_s=4)
    _stacked(r, 2, acks_late=True)
    r.core.hosts["h"].last_seen = T0
    members.housekeeping(r.core, T0 + 5)
    for task_id in ("s0", "s1"):
        entry = r.core.book.tasks[task_id]
        assert entry.state == QUEUED and entry.header.get("redelivered") is True


def test_a_started_label_that_is_not_one_is_taken_as_no_word():
    r = Router()
    _stacked(r, 3)
    _lost(r, "not a label")
    # The first and the granted ones right behind it may have started.
    assert r.final_exc("s0")["type"] == "WorkerLostError"
    assert [e for e in r.core.events if e["id"] == "s2"][-1].get("presumed") is True
    assert b"w" not in r.core.actors
