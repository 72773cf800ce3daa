"""Tasks go only to actors that have them (router rules without sockets: see
tests/test_unit_router_rules.py for the harness)."""

from __future__ import annotations

import pytest

from zq.protocol import Cmd, Message
from zq.router import control, members
from zq.router.book import QUEUED
from tests.test_unit_router_rules import T0, Router

pytestmark = pytest.mark.timeout(10)


def _ready(r: Router, actor: bytes, tasks, queues=("celery",), credit: int = 1) -> None:
    members.on_ready(r.core, actor, Message(Cmd.READY, {
        "queues": list(queues), "credit": credit, "host": "h", "pid": 1,
        "supervised": False, "holding": [], "registered": tasks}), T0)


def test_a_task_goes_only_to_an_actor_that_has_it():
    r = Router()
    r.submit("x", task="a.x")
    r.submit("y", task="b.y")
    _ready(r, b"A", ["a.x"])
    _ready(r, b"B", ["b.y"])
    assert r.deal() == {b"A": ["x"], b"B": ["y"]}


def test_a_task_another_actor_has_waits_at_the_front_for_it():
    r = Router()
    r.submit("x1", task="a.x")
    r.submit("y1", task="b.y")
    _ready(r, b"A", ["a.x"], credit=0)
    _ready(r, b"B", ["b.y"])
    # B cannot take x1 and A has no credit: x1 keeps its place, B waits (FIFO kept).
    assert r.deal() == {}
    assert r.core.book.tasks["x1"].state == QUEUED
    r.core.actors[b"A"].credit = 1
    r.core.set_hungry(r.core.actors[b"A"])
    assert r.deal() == {b"A": ["x1"], b"B": ["y1"]}


def test_a_task_no_actor_has_is_parked_and_the_rest_flows():
    r = Router()
    r.submit("lost", task="nobody.has")
    r.submit("y1", task="b.y")
    r.submit("y2", task="b.y")
    _ready(r, b"B", ["b.y"], credit=2)
    assert r.deal() == {b"B": ["y1", "y2"]}
    reply = control.stats(r.core, {}, T0)
    assert reply["parked"] == {"celery": {"nobody.has": 1}}
    assert reply["queued"] == {"celery": 1}
    # An actor that has it connects: it is put back and handed out.
    _ready(r, b"N", ["nobody.has"])
    assert r.deal() == {b"N": ["lost"]}
    assert control.stats(r.core, {}, T0)["parked"] == {}


def test_parked_tasks_keep_their_order_when_put_back():
    r = Router()
    for index in range(3):
        r.submit(f"p{index}", task="later")
    _ready(r, b"B", ["other"], credit=1)
    assert r.deal() == {}
    _ready(r, b"L", ["later"], credit=3)
    assert r.deal() == {b"L": ["p0", "p1", "p2"]}


def test_a_parked_task_can_be_revoked_purged_and_expired():
    r = Router()
    r.submit("rev", task="nobody")
    r.submit("purged", task="nobody", queue="q2")
    r.submit("exp", task="nobody", expires=T0 + 5)
    _ready(r, b"B", ["other"], queues=("celery", "q2"), credit=1)
    r.deal()
    assert control.stats(r.core, {}, T0)["parked"] == {"celery": {"nobody": 2},
                                                        "q2": {"nobody": 1}}
    assert r.control(op="revoke", ids=["rev"]).cmd is Cmd.REPLY
    assert r.states_of("rev")[-1] == "REVOKED"
    assert r.control(op="purge", queue="q2").header["purged"] == 1
    r.core.fire(T0 + 10)
    assert r.states_of("exp")[-1] == "REVOKED"
    assert control.stats(r.core, {}, T0 + 10)["parked"] == {}
    assert r.core.book.tasks == {}


def test_an_actor_that_says_nothing_of_its_tasks_takes_any():
    r = Router()
    r.submit("x", task="whatever")
    r.ready(b"old")  # no "tasks" field
    assert r.deal() == {b"old": ["x"]}


@pytest.mark.parametrize("tasks", ["a.x", [1, 2], {"a": 1}, ["a"] * 10_001, [""]])
def test_task_names_that_are_not_a_list_of_names_are_ignored(tasks):
    r = Router()
    r.submit("x", task="anything")
    _ready(r, b"A", tasks)
    assert r.core.actors[b"A"].tasks is None
    assert r.deal() == {b"A": ["x"]}


def test_the_sender_is_told_when_no_worker_has_the_task_once_in_a_while():
    r = Router()
    _ready(r, b"B", ["other"])
    r.submit("x1", task="nobody")
    r.submit("x2", task="nobody")
    warnings = [m for m in r.replies_to(b"client") if m.header.get("warnings")]
    assert len(warnings) == 1
    assert "has task 'nobody'" in warnings[0].header["warnings"][0][1]
    assert warnings[0].header["ids"] == []
    # Nobody consumes the queue at all: no warning (a worker may simply not be up yet).
    r2 = Router()
    r2.submit("x", task="nobody")
    assert not [m for m in r2.replies_to(b"client") if m.header.get("warnings")]
