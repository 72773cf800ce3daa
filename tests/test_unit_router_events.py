"""The router's Celery events, without sockets or a clock: which event each rule builds."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_unit_router_rules import T0, Router
from zq import states
from zq.protocol import Cmd, Message
from zq.router import intake, members, monitor

pytestmark = pytest.mark.timeout(10)


def listening(*types: str) -> Router:
    r = Router()
    r.core.monitor.subscribed(frozenset(types or ("*",)))
    return r


def built(r: Router, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in r.core.monitor.pending if kind is None or e["type"] == kind]


def test_nothing_is_built_while_nobody_wants_events():
    r = Router()
    r.ready(b"a1")
    r.submit("t1")
    r.deal()
    r.done(b"a1", "t1", runtime=0.5)
    members.on_bye(r.core, b"a1", Message(Cmd.BYE), T0)
    assert r.core.monitor.pending == []


def test_a_task_s_life_on_an_actor():
    r = listening()
    r.ready(b"a1", host="h1")
    r.submit("t1")
    r.deal()
    r.done(b"a1", "t1", runtime=0.25)
    kinds = [e["type"] for e in built(r)]
    assert kinds == ["worker-online", "task-sent", "task-received", "task-succeeded"]
    succeeded = built(r, "task-succeeded")[0]
    assert succeeded["uuid"] == "t1" and succeeded["runtime"] == 0.25
    assert succeeded["hostname"] == "a1" and succeeded["host"] == "h1"
    assert [e["clock"] for e in built(r)] == [1, 2, 3, 4]


def test_only_the_types_wanted_are_built():
    r = listening("task-failed")
    r.ready(b"a1")
    r.submit("ok"), r.submit("bad")
    r.deal()
    r.done(b"a1", "ok")
    r.deal()
    r.done(b"a1", "bad", state=states.FAILURE)
    assert [(e["type"], e["uuid"]) for e in built(r)] == [("task-failed", "bad")]


def test_a_lost_actor_goes_offline_once_and_its_task_fails_worker_lost():
    r = listening()
    r.ready(b"a1", supervised=True)
    r.submit("t1")
    r.deal()
    r.core.actor_lost(b"a1", "killed")
    r.core.actor_lost(b"a1", "killed")
    failed = built(r, "task-failed")
    assert len(failed) == 1 and failed[0]["exception"].startswith("WorkerLostError(")
    assert failed[0]["hostname"] == "a1"
    assert len(built(r, "worker-offline")) == 1


def test_revoked_and_expired_tasks_say_which():
    r = listening("task-revoked")
    r.submit("later", eta=T0 + 60)
    r.control(op="revoke", ids=["later"])
    r.submit("stale", eta=T0 + 1, expires=T0 + 0.5)
    r.core.fire(T0 + 2)
    revoked = {e["uuid"]: e for e in built(r)}
    assert revoked["later"]["expired"] is False and revoked["later"]["terminated"] is False
    assert revoked["stale"]["expired"] is True


def test_a_registration_leases_its_types_and_answers_what_is_held():
    r = Router()
    r.ready(b"a1")
    r.submit("running"), r.submit("queued")
    r.deal()
    intake.on_monitor(r.core, b"rx", Message(Cmd.MONITOR, {"types": ["*"], "wakeup": True,
                                                            "rid": 7}), T0)
    (answer,) = r.replies_to(b"rx")
    assert answer.cmd is Cmd.MONITOR and answer.header["rid"] == 7
    kinds = [(e["type"], e.get("uuid")) for e in answer.header["events"]]
    assert kinds == [("worker-online", None), ("worker-heartbeat", None),
                     ("task-sent", "running"), ("task-received", "running"),
                     ("task-sent", "queued")]
    assert answer.header["clock"] == 0
    assert r.core.monitor.on
    r.core.monitor.expire(T0 + monitor.LEASE_S + 1)
    assert not r.core.monitor.on


@pytest.mark.parametrize("header", [{}, {"types": "task-sent"}, {"types": ["nope"]},
                                    {"types": [None]}, {"types": ["*"] * 100}])
def test_a_malformed_registration_is_refused_with_one_line(header):
    r = Router()
    intake.on_monitor(r.core, b"rx", Message(Cmd.MONITOR, header), T0)
    (answer,) = r.replies_to(b"rx")
    assert answer.cmd is Cmd.ERROR and "\n" not in answer.header["message"]
    assert not r.core.monitor.on


def test_an_exception_as_data_reads_as_its_repr():
    assert monitor.exception_repr({"type": "KeyError", "args": ["k"]}) == "KeyError('k')"
    assert monitor.exception_repr({"type": "E", "message": "m"}) == "E('m')"
    assert monitor.exception_repr(None) == ""
