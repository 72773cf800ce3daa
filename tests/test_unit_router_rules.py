"""The router's rules, without sockets or a clock: a specification of what it decides.

Each test drives :class:`zq.router.core.Core` through the same handlers the loop calls,
with ``now`` passed in, and reads what the router would send.
"""

from __future__ import annotations

from typing import Any

import pytest

from zq import protocol, states
from zq.protocol import Cmd, Message
from zq.router import control, intake, members
from zq.router.book import INFLIGHT, QUEUED, SCHEDULED
from zq.router.core import Core

pytestmark = pytest.mark.timeout(10)

T0 = 1_000_000.0


class MemoryJournal:
    """The journal's interface, kept in lists."""

    fsync = False

    def __init__(self) -> None:
        self.written = 0
        self.records: list[tuple[Any, ...]] = []
        self.event_seq = 0

    @property
    def synced(self) -> int:
        return self.written

    def accepted(self, raw_header: bytes, body: bytes) -> None:
        self.records.append(("A", protocol.unpack(raw_header)["id"]))

    def finished(self, task_id: str, retries: int, event: Any = None) -> int | None:
        self.records.append(("D", task_id, retries))
        if event is None:
            return None
        self.event_seq += 1
        self.records.append(("E", self.event_seq, event["state"]))
        return self.event_seq

    def stored(self, upto: int) -> None:
        self.records.append(("S", upto))

    def revoked(self, task_id: str) -> None:
        self.records.append(("R", task_id))

    def part(self, body_id: str, index: int, event: Any) -> None:
        self.records.append(("C", body_id, index, event["state"]))

    def updated(self, raw_header: bytes, body: bytes) -> None:
        self.records.append(("A", protocol.unpack(raw_header)["id"]))


class Router:
    """A core and the handlers, with replies and events read back per call."""

    def __init__(self, **options: Any) -> None:
        self.journal = MemoryJournal()
        self.core = Core(self.journal, **options)

    def submit(self, task_id: str, now: float = T0, **header: Any) -> Message:
        fields = {"id": task_id, "task": "t", "ct": "application/x-msgpack", "queue": "celery",
                  **header}
        intake.on_submit(self.core, b"client", Message(Cmd.SUBMIT, fields, b"args"), now)
        return self.replies_to(b"client")[-1]

    def ready(self, actor: bytes, queues: tuple[str, ...] = ("celery",), credit: int = 1,
              now: float = T0, host: str = "h", supervised: bool = False) -> None:
        members.on_ready(self.core, actor, Message(Cmd.READY, {
            "queues": list(queues), "credit": credit, "host": host, "pid": 1,
            "supervised": supervised, "holding": []}), now)

    def heartbeat(self, actor: bytes, now: float = T0) -> None:
        members.on_heartbeat(self.core, actor, Message(Cmd.HEARTBEAT, {}), now)

    def deal(self, now: float = T0) -> dict[bytes, list[str]]:
        self.core.fire(now)
        return {identity: [e.uid for e in entries]
                for identity, entries in self.core.deal(now).items()}

    def done(self, actor: bytes, uid: str, retries: int = 0, now: float = T0,
             state: str | None = states.SUCCESS, **record: Any) -> None:
        if state is not None and not record.get("requeue"):
            record["event"] = protocol.state_event(uid, state, retries=retries, name="t")
        members.on_done(self.core, actor, Message(Cmd.DONE, {"id": uid, "retries": retries,
                                                             **record}), now)

    def control(self, now: float = T0, **header: Any) -> Message:
        control.on_control(self.core, b"admin", Message(Cmd.CONTROL, header), now)
        return self.replies_to(b"admin")[-1]

    def replies_to(self, identity: bytes) -> list[Message]:
        return [msg for to, msg in self.core.replies if to == identity]

    def states_of(self, task_id: str) -> list[str]:
        return [e["state"] for e in self.core.events if e["id"] == task_id]

    def final_exc(self, task_id: str) -> dict[str, Any]:
        return [e for e in self.core.events if e["id"] == task_id][-1]["exc"]


# -- intake ------------------------------------------------------------------------------

def test_an_accepted_task_is_journaled_queued_and_sent():
    r = Router()
    assert r.submit("a").cmd is Cmd.ACCEPTED
    assert r.journal.records == [("A", "a")]
    assert r.core.book.tasks["a"].state == QUEUED
    assert r.states_of("a") == [states.SENT]


def test_a_resent_task_is_accepted_again_but_taken_once():
    r = Router()
    r.submit("a")
    assert r.submit("a").cmd is Cmd.ACCEPTED
    assert r.journal.records == [("A", "a")]
    assert r.core.dispatch.depth("celery") == 1


def test_a_bad_header_is_refused_with_one_line_and_nothing_is_kept():
    r = Router()
    reply = r.submit("a", priority=12)
    assert reply.cmd is Cmd.ERROR and "priority" in reply.header["message"]
    assert not r.core.book.tasks and not r.journal.records


def test_a_full_queue_refuses_with_queue_full():
    r = Router(max_queue_length=2)
    r.submit("a"), r.submit("b")
    reply = r.submit("c")
    assert reply.header["error"] == "QueueFull"
    assert "c" not in r.core.book.tasks


def test_mandatory_with_no_binding_is_refused_and_without_it_fails_visibly():
    r = Router()
    assert r.submit("a", queue="", exchange="nowhere", rk="k",
                    mandatory=True).header["error"] == "NoRoute"
    assert r.submit("b", queue="", exchange="nowhere", rk="k").cmd is Cmd.ACCEPTED
    assert r.states_of("b") == [states.FAILURE]
    assert r.final_exc("b")["type"] == "NoRoute"


def test_a_fanout_task_becomes_one_copy_per_bound_queue():
    r = Router()
    r.core.declare([{"queue": q, "exchange": "all", "type": "fanout", "key": ""}
                    for q in ("q1", "q2")])
    r.submit("a", queue="", exchange="all")
    assert sorted(r.core.book.tasks) == ["a\x1fq1", "a\x1fq2"]
    r.ready(b"w1", ("q1",)), r.ready(b"w2", ("q2",))
    assert r.deal() == {b"w1": ["a\x1fq1"], b"w2": ["a\x1fq2"]}


# -- dispatch and credit -----------------------------------------------------------------

def test_credit_bounds_what_an_actor_holds_and_done_returns_it():
    r = Router()
    for task_id in "abc":
        r.submit(task_id)
    r.ready(b"w", credit=2)
    assert r.deal() == {b"w": ["a", "b"]}
    assert r.deal() == {}
    r.done(b"w", "a")
    assert r.deal() == {b"w": ["c"]}
    assert ("D", "a", 0) in r.journal.records


def test_work_is_spread_one_task_per_hungry_actor_per_pass():
    r = Router()
    for task_id in "abcd":
        r.submit(task_id)
    r.ready(b"w1", credit=2), r.ready(b"w2", credit=2)
    assert r.deal() == {b"w1": ["a", "c"], b"w2": ["b", "d"]}


def test_priority_zero_is_served_first_and_fifo_within_a_level():
    r = Router()
    r.submit("low1", priority=9), r.submit("high", priority=0), r.submit("low2", priority=9)
    r.ready(b"w", credit=3)
    assert r.deal() == {b"w": ["high", "low1", "low2"]}


def test_an_actor_takes_from_its_queues_in_turn():
    r = Router()
    for i in range(3):
        r.submit(f"slow{i}", queue="slow")
    for i in range(3):
        r.submit(f"fast{i}", queue="fast")
    r.ready(b"w", ("slow", "fast"), credit=4)
    assert r.deal() == {b"w": ["slow0", "fast0", "slow1", "fast1"]}


def test_an_actor_only_gets_tasks_of_its_queues():
    r = Router()
    r.submit("v", queue="video")
    r.ready(b"w", ("image",))
    assert r.deal() == {}
    assert r.core.book.tasks["v"].state == QUEUED


# -- lost actors -------------------------------------------------------------------------

def _running(r: Router, actor: bytes, *ids: str, **header: Any) -> None:
    for task_id in ids:
        r.submit(task_id, **header)
    r.ready(actor, credit=len(ids), host="h", supervised=True)
    assert r.deal()[actor] == list(ids)


def test_an_early_acked_task_of_a_dead_actor_fails_with_worker_lost_and_prefetched_go_back():
    r = Router()
    _running(r, b"w", "run", "pre")
    members.on_lost(r.core, b"h", Message(Cmd.LOST, {"actor": b"w", "reason": "SIGKILL"}), T0)
    assert r.states_of("run")[-1] == states.FAILURE
    assert r.final_exc("run")["type"] == "WorkerLostError"
    assert r.core.book.tasks["pre"].state == QUEUED
    assert "redelivered" not in r.core.book.tasks["pre"].header


def test_an_acks_late_task_of_a_dead_actor_is_redelivered_up_to_the_cap():
    r = Router(max_redeliveries=2)
    _running(r, b"w0", "late", acks_late=True)
    for attempt in range(1, 3):
        members.on_lost(r.core, b"h", Message(Cmd.LOST, {"actor": f"w{attempt - 1}".encode()}),
                        T0)
        entry = r.core.book.tasks["late"]
        assert entry.header["redelivered"] and entry.redeliveries == attempt
        r.ready(f"w{attempt}".encode(), host="h", supervised=True)
        assert r.deal() == {f"w{attempt}".encode(): ["late"]}
    members.on_lost(r.core, b"h", Message(Cmd.LOST, {"actor": b"w2"}), T0)
    assert "late" not in r.core.book.tasks
    assert r.final_exc("late")["type"] == "WorkerLostError"
    assert "max_redeliveries=2" in r.final_exc("late")["message"]


def test_a_task_s_own_max_redeliveries_wins_over_the_router_s():
    r = Router(max_redeliveries=5)
    _running(r, b"w", "late", acks_late=True, max_redeliveries=0)
    members.on_lost(r.core, b"h", Message(Cmd.LOST, {"actor": b"w"}), T0)
    assert r.final_exc("late")["type"] == "WorkerLostError"


def test_reject_on_worker_lost_false_fails_an_acks_late_task():
    r = Router()
    _running(r, b"w", "late", acks_late=True, reject_on_worker_lost=False)
    members.on_lost(r.core, b"h", Message(Cmd.LOST, {"actor": b"w"}), T0)
    assert r.final_exc("late")["type"] == "WorkerLostError"


def test_only_an_actor_s_own_supervisor_may_report_it_lost():
    r = Router()
    _running(r, b"w", "a")
    members.on_lost(r.core, b"stranger", Message(Cmd.LOST, {"actor": b"w"}), T0)
    assert r.replies_to(b"stranger")[-1].cmd is Cmd.ERROR
    assert r.core.book.tasks["a"].state == INFLIGHT


def test_a_silent_host_loses_its_actors_after_the_host_timeout():
    r = Router(host_timeout_s=4.0)
    _running(r, b"w", "a", acks_late=True)
    heartbeat = Message(Cmd.HEARTBEAT, {"host": "h", "actors": [b"w"]})
    members.on_heartbeat(r.core, b"h", heartbeat, T0)
    members.housekeeping(r.core, T0 + 3.9)
    assert r.core.book.tasks["a"].state == INFLIGHT
    members.housekeeping(r.core, T0 + 4.1)
    assert r.core.book.tasks["a"].state == QUEUED
    assert r.core.book.tasks["a"].redeliveries == 1


def test_an_actor_s_bye_hands_back_what_it_held_unstarted():
    r = Router()
    _running(r, b"w", "a", "b")
    members.on_bye(r.core, b"w", Message(Cmd.BYE, {}), T0)
    assert [r.core.book.tasks[t].state for t in "ab"] == [QUEUED, QUEUED]
    r.ready(b"w2", credit=2)
    assert r.deal() == {b"w2": ["a", "b"]}


def test_a_rejected_task_is_requeued_until_the_cap_then_fails():
    r = Router(max_redeliveries=1)
    _running(r, b"w", "a", acks_late=True)
    r.done(b"w", "a", requeue=True, started=True)
    assert r.core.book.tasks["a"].redeliveries == 1
    assert r.deal() == {b"w": ["a"]}
    r.done(b"w", "a", requeue=True, started=True)
    assert r.final_exc("a")["type"] == "Reject"


# -- time: countdown, expiry, rate limits ------------------------------------------------

def test_a_countdown_task_waits_in_the_timers_until_its_eta():
    r = Router()
    r.submit("later", eta=T0 + 5)
    r.ready(b"w")
    assert r.core.book.tasks["later"].state == SCHEDULED
    assert r.core.schedule.next_deadline() == T0 + 5
    assert r.deal(T0 + 4.9) == {}
    assert r.deal(T0 + 5) == {b"w": ["later"]}


def test_a_queued_task_past_its_expiry_is_revoked_and_never_handed_out():
    r = Router()
    r.submit("x", expires=T0 + 1)
    r.deal(T0 + 2)
    assert "x" not in r.core.book.tasks
    assert r.states_of("x")[-1] == states.REVOKED
    r.ready(b"w")
    assert r.deal(T0 + 2) == {}


def test_an_expired_task_is_not_handed_out_even_before_its_timer_fires():
    r = Router()
    r.submit("x", expires=T0 + 1)
    r.ready(b"w")
    assert r.core.deal(T0 + 2) == {}
    assert r.states_of("x")[-1] == states.REVOKED


def test_a_rate_limit_spaces_starts_across_all_actors():
    r = Router()
    for task_id in "abc":
        r.submit(task_id, rate_limit="2/s")
    r.ready(b"w1", credit=3), r.ready(b"w2", credit=3)

    def started(now: float) -> list[str]:
        return [uid for uids in r.deal(now).values() for uid in uids]

    assert started(T0) == ["a"]
    assert started(T0 + 0.49) == []
    assert started(T0 + 0.5) == ["b"]
    assert started(T0 + 0.99) == []
    assert started(T0 + 1.0) == ["c"]


def test_a_rate_set_by_control_wins_over_the_task_s_header():
    r = Router()
    assert r.control(op="rate_limit", task="t", rate_limit="1/s").cmd is Cmd.REPLY
    r.submit("a", rate_limit="100/s"), r.submit("b", rate_limit="100/s")
    r.ready(b"w", credit=2)
    assert r.deal(T0) == {b"w": ["a"]}
    assert r.deal(T0 + 0.5) == {}
    assert r.deal(T0 + 1.0) == {b"w": ["b"]}


# -- revoke ------------------------------------------------------------------------------

def test_revoking_a_queued_or_scheduled_task_ends_it_revoked_and_journaled():
    r = Router()
    r.submit("q"), r.submit("s", eta=T0 + 60)
    assert r.control(op="revoke", ids=["q", "s"]).cmd is Cmd.REPLY
    assert not r.core.book.tasks
    assert r.states_of("q")[-1] == r.states_of("s")[-1] == states.REVOKED
    assert ("R", "q") in r.journal.records and ("D", "s", 0) in r.journal.records


def test_a_revoked_id_submitted_later_never_runs():
    r = Router()
    r.control(op="revoke", ids=["future"])
    assert r.submit("future").cmd is Cmd.ACCEPTED
    assert r.states_of("future") == [states.REVOKED]
    assert "future" not in r.core.book.tasks


def test_revoking_a_prefetched_task_asks_its_actor_to_drop_it_and_terminate_kills_the_running():
    r = Router()
    _running(r, b"w", "run", "pre")
    r.core.replies.clear()
    r.control(op="revoke", ids=["pre"])
    assert r.replies_to(b"w")[0].header == {"op": "revoke", "ids": ["pre"]}
    r.control(op="revoke", ids=["run"], terminate=True, signal="SIGKILL")
    kill = r.replies_to(b"h")[0]
    assert kill.header["op"] == "kill" and kill.header["actor"] == b"w"
    assert protocol.parse_attempt_label(kill.header["task"]) == ("run", 0)


def test_an_unknown_control_operation_is_one_line_error():
    r = Router()
    reply = r.control(op="explode", rid=7)
    assert reply.cmd is Cmd.ERROR and reply.header["rid"] == 7
    assert "explode" in reply.header["message"]


def test_purge_drops_waiting_tasks_of_one_queue():
    r = Router()
    r.submit("a"), r.submit("b", queue="other")
    assert r.control(op="purge", queue="celery").header["purged"] == 1
    assert list(r.core.book.tasks) == ["b"]


# -- outcomes: recorded with the task's end, confirmed, handed over again ----------------

def test_a_done_is_journaled_with_its_result_and_confirmed_to_the_actor():
    r = Router()
    _running(r, b"w", "a")
    r.core.replies.clear()
    r.done(b"w", "a")
    assert r.journal.records[-2:] == [("D", "a", 0), ("E", 1, states.SUCCESS)]
    # Nothing reserved behind it: the confirmation waits for the next TASK (or the next
    # housekeeping), a message saved per task.
    assert r.replies_to(b"w") == []
    assert r.core.take_confirms(b"w") == [["a", 0]]
    assert list(r.core.unstored) == [1]
    r.core.stored(1)
    assert not r.core.unstored and r.journal.records[-1] == ("S", 1)


def test_a_done_is_confirmed_at_once_to_an_actor_with_a_reserved_task_waiting():
    r = Router()
    _running(r, b"w", "a", "b")
    r.core.replies.clear()
    r.done(b"w", "a")
    assert [(m.cmd, m.header) for m in r.replies_to(b"w")] == [
        (Cmd.CONFIRM, {"done": [["a", 0]]})]


def test_confirmations_not_sent_with_a_task_go_at_housekeeping():
    r = Router()
    _running(r, b"w", "a")
    r.core.replies.clear()
    r.done(b"w", "a")
    r.core.flush_confirms()
    assert [m.cmd for m in r.replies_to(b"w")] == [Cmd.CONFIRM]
    assert r.core.take_confirms(b"w") is None


def test_every_final_event_the_router_makes_is_journaled_with_the_end():
    r = Router()
    r.submit("gone", expires=T0 + 1)
    r.submit("nowhere", queue="", exchange="none", rk="k")
    r.deal(T0 + 2)
    kinds = [rec[2] for rec in r.journal.records if rec[0] == "E"]
    assert sorted(kinds) == [states.FAILURE, states.REVOKED]
    assert len(r.core.unstored) == 2


def test_an_outcome_handed_over_again_finishes_the_replayed_copy_and_is_confirmed():
    r = Router()
    r.submit("a")  # as replayed from the journal after a restart: queued
    members.on_ready(r.core, b"w", Message(Cmd.READY, {
        "queues": ["celery"], "credit": 1, "host": "h", "pid": 1, "holding": [],
        "done": [{"id": "a", "retries": 0,
                  "event": protocol.state_event("a", states.SUCCESS, name="t")}]}), T0)
    welcome = r.replies_to(b"w")[-1]
    assert welcome.header["confirm"] == [["a", 0]]
    assert "a" not in r.core.book.tasks
    assert r.deal() == {}


def test_a_late_outcome_of_a_finished_attempt_is_forwarded_and_journaled():
    r = Router(host_timeout_s=4.0)
    _running(r, b"w", "a")
    members.on_heartbeat(r.core, b"h", Message(Cmd.HEARTBEAT, {"host": "h",
                                                               "actors": [b"w"]}), T0)
    members.housekeeping(r.core, T0 + 5)
    lost = [e for e in r.core.events if e["id"] == "a"][-1]
    assert lost["state"] == states.FAILURE and lost["presumed"] is True
    r.done(b"w", "a", now=T0 + 6)  # the host came back with the real outcome
    assert [e["state"] for e in r.core.events if e["id"] == "a"][-1] == states.SUCCESS
    assert ("E", 2, states.SUCCESS) in r.journal.records


# -- liveness and the lease ---------------------------------------------------------------

def test_an_actor_s_heartbeat_is_answered_so_that_it_keeps_its_lease():
    r = Router(host_timeout_s=10.0)
    r.ready(b"w")
    assert r.replies_to(b"w")[-1].header["lease_s"] == 5.0
    r.heartbeat(b"w")
    assert r.replies_to(b"w")[-1].cmd is Cmd.HEARTBEAT
    r.heartbeat(b"stranger")
    assert r.replies_to(b"stranger")[-1].cmd is Cmd.RESYNC


def test_an_actor_without_supervisor_that_goes_silent_loses_its_tasks():
    r = Router(host_timeout_s=4.0)
    for task_id in ("run", "pre"):
        r.submit(task_id)
    r.ready(b"liar", credit=2, now=T0)
    assert r.deal() == {b"liar": ["run", "pre"]}
    r.core.seen(b"liar", T0 + 1)
    members.housekeeping(r.core, T0 + 4.5)
    assert r.core.book.tasks["run"].state == INFLIGHT
    members.housekeeping(r.core, T0 + 5.5)
    assert b"liar" not in r.core.actors
    assert r.final_exc("run")["type"] == "WorkerLostError"
    assert r.core.book.tasks["pre"].state == QUEUED


def test_an_actor_known_only_from_its_supervisor_gets_no_word_but_resync():
    """A host back from a cut: its supervisor's heartbeat names what a busy actor runs,
    and the router keeps a placeholder for that actor. Neither its DONE nor its heartbeat
    may renew its lease before it has announced itself: only RESYNC answers them."""
    r = Router()
    r.submit("a")
    members.on_heartbeat(r.core, b"h", Message(Cmd.HEARTBEAT, {
        "host": "h", "actors": [b"w"], "running": [[b"w", "a", 0]]}), T0)
    assert r.core.actors[b"w"].placeholder
    r.core.replies.clear()
    r.done(b"w", "a")
    r.heartbeat(b"w")
    assert [m.cmd for m in r.replies_to(b"w")] == [Cmd.RESYNC, Cmd.RESYNC]
    assert "a" not in r.core.book.tasks
