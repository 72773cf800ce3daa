"""Clients waiting at the router for results, and ACCEPTEDs that wait a moment (router
rules without sockets: see tests/test_unit_router_rules.py for the harness)."""

from __future__ import annotations

import pytest

from zq import states
from zq.protocol import Cmd, Message
from zq.router import intake, waiting
from zq.router.core import ACCEPT_LATER_MAX, ACCEPT_LATER_S
from zq.router.durable import Durable
from tests.test_unit_router_rules import T0, MemoryJournal, Router

pytestmark = pytest.mark.timeout(10)


def _wait(r: Router, ids, identity: bytes = b"client") -> list[Message]:
    before = len(r.replies_to(identity))
    intake.on_wait(r.core, identity, Message(Cmd.WAIT, {"ids": ids}), T0)
    return r.replies_to(identity)[before:]


def _publish(r: Router, task_id: str, identity: bytes = b"client", **header) -> None:
    fields = {"id": task_id, "task": "t", "ct": "application/x-msgpack", "queue": "celery",
              **header}
    intake.on_publish(r.core, identity, Message(Cmd.PUBLISH, fields, b"args"), T0)


def test_a_client_waiting_for_a_held_task_is_sent_its_final_state_when_it_ends():
    r = Router()
    r.submit("a")
    assert _wait(r, ["a"]) == []
    r.ready(b"w")
    r.deal()
    r.done(b"w", "a")
    pushes = r.core.waiters.take_pushes()
    assert [(to, [row["id"] for row in msg.header["states"]]) for to, msg in pushes] == [
        (b"client", ["a"])]
    assert pushes[0][1].header["states"][0]["state"] == states.SUCCESS
    assert len(r.core.waiters) == 0


def test_ids_the_router_does_not_hold_are_answered_elsewhere_at_once():
    r = Router()
    r.submit("held")
    (reply,) = _wait(r, ["held", "finished-or-unknown"])
    assert reply.cmd is Cmd.STATES
    assert reply.header == {"states": [], "elsewhere": ["finished-or-unknown"]}


def test_a_retry_is_not_a_final_state_and_the_waiter_stays():
    r = Router()
    r.submit("a")
    _wait(r, ["a"])
    r.ready(b"w")
    r.deal()
    r.done(b"w", "a", state=states.RETRY)
    assert r.core.waiters.take_pushes() == []
    assert len(r.core.waiters) == 1


def test_several_clients_wait_for_one_task_and_room_is_bounded(monkeypatch):
    monkeypatch.setattr(waiting, "MAX_PER_TASK", 2)
    r = Router()
    r.submit("a")
    assert _wait(r, ["a"], b"c1") == [] and _wait(r, ["a"], b"c2") == []
    (reply,) = _wait(r, ["a"], b"c3")
    assert reply.header["elsewhere"] == ["a"]


def test_while_the_journal_cannot_be_written_every_id_is_elsewhere():
    r = Router()
    r.submit("a")
    r.core.durable.failure = "journal x: No space left on device"
    (reply,) = _wait(r, ["a"])
    assert reply.header["elsewhere"] == ["a"]


@pytest.mark.parametrize("ids, message", [
    (None, "WAIT needs 'ids'"), ("a", "WAIT needs 'ids'"), ([1], "WAIT needs 'ids'"),
    ([""], "WAIT needs 'ids'"), (["x" * 1000], "WAIT needs 'ids'"),
    (["a"] * (waiting.MAX_IDS + 1), "at most"),
])
def test_a_bad_wait_gets_a_one_line_error(ids, message):
    r = Router()
    (reply,) = _wait(r, ids)
    assert reply.cmd is Cmd.ERROR and message in reply.header["message"]
    assert "\n" not in reply.header["message"]


def test_waiters_of_tasks_no_longer_held_are_forgotten():
    r = Router()
    r.submit("a")
    _wait(r, ["a"])
    r.core.book.tasks.pop("a")
    r.core.waiters.forget(r.core.book.tasks.__contains__)
    assert len(r.core.waiters) == 0


class _Unsynced(MemoryJournal):
    """A journal with fsync whose last commit is written and not synced yet."""

    fsync = True

    @property
    def synced(self) -> int:
        return 0


def test_with_fsync_a_pushed_result_waits_for_the_sync_like_an_accepted():
    journal = _Unsynced()
    journal.written = 1
    push = (b"client", Message(Cmd.STATES, {"states": [{"id": "a"}]}))
    assert Durable(journal).outgoing([push]) == []


# -- ACCEPTEDs that wait a moment ---------------------------------------------------------

def test_a_published_task_s_accepted_waits_and_then_goes_with_the_others():
    r = Router()
    _publish(r, "a")
    _publish(r, "b")
    assert r.replies_to(b"client") == []
    r.core.flush_later(T0 + ACCEPT_LATER_S / 2)
    assert r.replies_to(b"client") == []
    r.core.flush_later(T0 + 2 * ACCEPT_LATER_S)
    (reply,) = r.replies_to(b"client")
    assert reply.cmd is Cmd.ACCEPTED and reply.header == {"ids": ["a", "b"]}
    assert r.core.later_since is None


def test_many_waiting_accepteds_go_at_once():
    r = Router()
    for index in range(ACCEPT_LATER_MAX):
        _publish(r, f"t{index}")
    r.core.flush_later(T0)
    (reply,) = r.replies_to(b"client")
    assert len(reply.header["ids"]) == ACCEPT_LATER_MAX


def test_a_final_state_sent_to_the_client_answers_for_its_accepted():
    r = Router()
    _publish(r, "a")
    _wait(r, ["a"])
    r.ready(b"w")
    r.deal()
    r.done(b"w", "a")
    for identity, push in r.core.waiters.take_pushes():
        r.core.covered(identity, [row["id"] for row in push.header["states"]])
    assert r.core.later == {} and r.core.later_since is None
    r.core.flush_later(T0 + 1)
    assert [m.cmd for m in r.replies_to(b"client")] == []


def test_a_refused_published_task_is_answered_at_once():
    r = Router()
    _publish(r, "a", queue="", exchange="nowhere", mandatory=True)
    (reply,) = r.replies_to(b"client")
    assert reply.cmd is Cmd.ERROR and reply.header["id"] == "a"
    assert r.core.later == {}


def test_a_published_task_whose_commit_failed_is_refused_not_accepted():
    r = Router()
    _publish(r, "a")
    entries = list(r.core.durable.unwritten)
    intake.unwritten(r.core, entries, "journal x: No space left on device")
    r.core.flush_later(T0 + 1)
    (reply,) = r.replies_to(b"client")
    assert reply.cmd is Cmd.ERROR and reply.header["id"] == "a"
    assert "No space left" in reply.header["message"]


def test_a_task_that_ended_recently_is_answered_from_its_unstored_final_event():
    r = Router()
    r.submit("a")
    r.ready(b"w")
    r.deal()
    r.done(b"w", "a")
    assert _wait(r, ["a"]) == []
    ((to, push),) = r.core.waiters.take_pushes()
    assert to == b"client" and push.header["states"][0]["state"] == states.SUCCESS
    # Once the results actor stored it, it is asked there.
    r.core.stored(r.journal.event_seq)
    (reply,) = _wait(r, ["a"])
    assert reply.header["elsewhere"] == ["a"]
