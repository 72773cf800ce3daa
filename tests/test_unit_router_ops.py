"""The router's inspect and control operations, without sockets or a clock."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_unit_router_rules import T0, Router
from zq import protocol, states
from zq.protocol import Cmd, Message
from zq.router import members

pytestmark = pytest.mark.timeout(10)


def pool(actor: str = "h/0/0", **facts: Any) -> dict[str, Any]:
    return {"pid": 7, "started": T0 - 10, "size": 1, "prefetch": 1, "conf": {"prefetch": 1},
            "actors": {actor: {"pid": 11, "started": T0 - 5, "processed": {"t": 3},
                               "rusage": {"utime": 0.5}, **facts}}}


def heartbeat(r: Router, pool_facts: Any, host: str = "h", now: float = T0) -> None:
    members.on_heartbeat(r.core, host.encode(), Message(Cmd.HEARTBEAT, {
        "host": host, "actors": [f"{host}/0/0"], "pool": pool_facts}), now)


def inspect(r: Router, method: str, now: float = T0, **fields: Any) -> Any:
    reply = r.control(now, op="inspect", method=method, **fields)
    assert reply.cmd is Cmd.REPLY, reply.header
    return reply.header["answer"]


def holding(r: Router, *ids: str) -> None:
    """Actor h/0/0 of host h holds ``ids``, the first running."""
    for task_id in ids:
        r.submit(task_id, args=None)
    members.on_ready(r.core, b"h/0/0", Message(Cmd.READY, {
        "queues": ["celery"], "credit": len(ids), "host": "h", "pid": 11,
        "supervised": True, "holding": [], "registered": ["t", "u"]}), T0)
    r.deal()


def test_active_reserved_and_query_task_say_what_each_actor_holds():
    r = Router()
    holding(r, "a", "b")
    heartbeat(r, pool(task=["a", 0], began=T0 - 2))
    active = inspect(r, "active")["h/0/0"]
    assert [t["id"] for t in active] == ["a"] and active[0]["time_start"] == T0 - 2
    assert active[0]["worker_pid"] == 11 and active[0]["delivery_info"]["queue"] == "celery"
    assert [t["id"] for t in inspect(r, "reserved")["h/0/0"]] == ["b"]
    assert inspect(r, "query_task", ids=["b"])["h/0/0"]["b"][0] == "reserved"
    assert inspect(r, "registered") == {"h/0/0": ["t", "u"]}


def test_stats_and_conf_come_from_the_supervisor_s_heartbeat():
    r = Router()
    holding(r)
    heartbeat(r, pool())
    stats = inspect(r, "stats")
    assert stats["h/0/0"]["uptime"] == 5 and stats["h/0/0"]["total"] == {"t": 3}
    assert stats["h/0/0"]["pool"]["max-concurrency"] == 1
    assert stats["router"]["actors"] == 1
    assert inspect(r, "conf") == {"h": {"prefetch": 1}}


def test_bad_pool_facts_and_task_names_are_ignored_and_the_router_goes_on():
    r = Router()
    holding(r)
    heartbeat(r, pool())
    for bad in ({"pid": "x"}, [1], pool(pid=-1), pool(processed={"t": "many"}),
                pool(task="a"), {**pool(), "autoscale": [1]}):
        heartbeat(r, bad)
    assert inspect(r, "stats")["h/0/0"]["total"] == {"t": 3}  # the last good facts
    members.on_ready(r.core, b"h/0/0", Message(Cmd.READY, {
        "queues": ["celery"], "credit": 1, "holding": [], "registered": [1, None]}), T0)
    assert inspect(r, "registered") == {"h/0/0": ["t", "u"]}


def test_queued_lists_a_queue_in_order_with_ages_up_to_the_limit():
    r = Router()
    r.submit("low", now=T0, priority=9)
    r.submit("high", now=T0 + 1, priority=0)
    r.submit("mid", now=T0 + 2, priority=5)
    answer = inspect(r, "queued", now=T0 + 10, queue="celery", limit=2)
    assert answer["size"] == 3
    assert [(t["id"], t["age_s"]) for t in answer["tasks"]] == [("high", 9), ("mid", 8)]
    assert inspect(r, "queued", queue="nothing") == {"queue": "nothing", "size": 0,
                                                     "tasks": []}


def test_task_says_where_a_task_is():
    r = Router()
    holding(r, "run")
    r.submit("q")
    r.submit("s", eta=T0 + 60)
    heartbeat(r, pool(task=["run", 0], began=T0 - 1))
    assert inspect(r, "task", id="q")["where"][0]["state"] == "queued"
    assert inspect(r, "task", id="s")["where"][0]["until"] == T0 + 60
    running = inspect(r, "task", id="run")["where"][0]
    assert running == {**running, "state": "active", "actor": "h/0/0", "since": T0 - 1}
    assert inspect(r, "task", id="gone")["where"] == []


def test_scheduled_and_revoked_are_the_router_s():
    r = Router()
    r.submit("s", eta=T0 + 60)
    assert inspect(r, "scheduled")["router"][0]["request"]["id"] == "s"
    r.control(op="revoke", ids=["s"])
    assert inspect(r, "revoked") == {"router": ["s"]}


def test_destination_selects_actors_by_name_or_host():
    r = Router()
    r.ready(b"h/0/0", host="h", supervised=True)
    r.ready(b"g/0/0", host="g", supervised=True)
    assert set(inspect(r, "ping", destination=["g"])) == {"g/0/0"}
    assert set(inspect(r, "ping", destination=["h/0/0"])) == {"h/0/0"}
    assert inspect(r, "ping", destination=["nobody"]) == {}


def test_purged_tasks_end_revoked_so_that_get_raises():
    r = Router()
    r.submit("a")
    assert r.control(op="purge").header["purged"] == 1
    assert r.states_of("a")[-1] == states.REVOKED
    assert "purged" in r.final_exc("a")["message"]


def test_time_limit_goes_to_every_actor_and_its_supervisor():
    r = Router()
    holding(r)
    r.core.replies.clear()
    reply = r.control(op="time_limit", task="t", soft=1, hard=2)
    assert reply.header["replies"] == {"h/0/0": {"ok": "time limits set for t: soft 1.0, "
                                                       "hard 2.0"}}
    sent = {to: msg.header for to, msg in r.core.replies if msg.cmd is Cmd.CONTROL}
    assert sent[b"h/0/0"] == sent[b"h"] == {"op": "time_limit", "task": "t", "soft": 1.0,
                                             "hard": 2.0}


def test_cancel_consumer_stops_dispatch_from_the_queue_at_once():
    r = Router()
    holding(r)
    r.control(op="cancel_consumer", queue="celery")
    r.submit("later")
    assert r.deal() == {}
    assert r.core.actors[b"h/0/0"].queues == ()
    host_msg = [m.header for to, m in r.core.replies if to == b"h" and m.cmd is Cmd.CONTROL]
    assert host_msg[-1] == {"op": "cancel_consumer", "queue": "celery", "actors": ["h/0/0"]}
    # The actor announces itself with no queue at all: taken, and it still takes nothing.
    members.on_ready(r.core, b"h/0/0", Message(Cmd.READY, {
        "queues": [], "credit": 1, "holding": []}), T0)
    assert r.deal() == {}
    members.on_ready(r.core, b"h/0/0", Message(Cmd.READY, {
        "queues": ["celery"], "credit": 1, "holding": []}), T0)
    assert r.deal() == {b"h/0/0": ["later"]}


def test_pool_and_shutdown_requests_go_to_the_hosts():
    r = Router()
    holding(r)
    heartbeat(r, pool())
    for op, fields in [("pool_grow", {"n": 2}), ("pool_shrink", {}), ("shutdown", {}),
                       ("autoscale", {"max": 4, "min": 1})]:
        r.core.replies.clear()
        assert list(r.control(op=op, **fields).header["replies"]) == ["h"]
        assert r.replies_to(b"h")[0].header["op"] == op


@pytest.mark.parametrize("header", [
    {"op": "inspect"}, {"op": "inspect", "method": "explode"},
    {"op": "inspect", "method": "query_task", "ids": "a"},
    {"op": "inspect", "method": "queued"}, {"op": "inspect", "method": "queued",
                                            "queue": "q", "limit": -1},
    {"op": "inspect", "method": "task", "id": 3},
    {"op": "inspect", "method": "ping", "destination": [1]},
    {"op": "time_limit"}, {"op": "time_limit", "task": "t", "soft": "x"},
    {"op": "time_limit", "task": "t", "soft": 3, "hard": 1},
    {"op": "add_consumer"}, {"op": "cancel_consumer", "queue": ""},
    {"op": "pool_grow", "n": "many"}, {"op": "pool_shrink", "n": -1},
    {"op": "autoscale", "max": 1}, {"op": "autoscale", "max": 1, "min": 2},
    {"op": "purge", "queue": 7}, {"op": "terminate"},
])
def test_bad_requests_get_one_line_and_the_router_goes_on(header):
    r = Router()
    holding(r)
    reply = r.control(rid=5, **header)
    assert reply.cmd is Cmd.ERROR and reply.header["rid"] == 5
    assert "\n" not in reply.header["message"]
    assert r.control(op="stats").cmd is Cmd.REPLY


def test_pool_facts_check_accepts_what_a_supervisor_sends():
    assert protocol.pool_facts_problem(pool(task=None, began=0.0)) is None
    assert protocol.pool_facts_problem({**pool(), "autoscale": [3, 1]}) is None
