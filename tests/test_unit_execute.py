"""zq.worker.execute: one task message in, what the actor must send out. No sockets."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from zq import App, serialization, states
from zq.errors import Reject
from zq.protocol import Cmd, Message, copy_id
from zq.canvas import Signature
from zq.worker.execute import Executed, Executor, revoked_record

app = App("unit-execute", router="ipc:///nonexistent/zq-unit-tests.sock")


@app.task(name="ex.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="ex.started", track_started=True)
def started() -> str:
    return "ok"


@app.task(name="ex.divide")
def divide(x: int, y: int) -> float:
    return x / y


@app.task(name="ex.exits")
def exits() -> None:
    sys.exit(3)


@app.task(name="ex.rejects")
def rejects() -> None:
    raise Reject("not now", requeue=True)


@app.task(name="ex.quiet", ignore_result=True)
def quiet() -> int:
    return 1


@pytest.fixture
def emitted() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def executor(emitted: list[dict[str, Any]]) -> Executor:
    return Executor(app, app_path="tests.test_unit_execute", emit=emitted.append)


def task_message(name: str, *args: Any, **header: Any) -> Message:
    content_type, body = serialization.dumps([list(args), {}], "msgpack")
    return Message(Cmd.TASK, {"id": f"id-{name}", "task": name, "ct": content_type, **header},
                   body)


def result_of(executed: Executed) -> Any:
    event = executed.done["event"]
    accept = serialization.content_types(["msgpack"])
    return serialization.loads(event["body"], event["ct"], accept)


def test_success_is_the_done_record_with_the_result_and_nothing_else(executor, emitted):
    executed = executor.execute(task_message("ex.add", 2, 3))
    assert executed.done["id"] == "id-ex.add"
    assert executed.done["retries"] == 0
    assert "requeue" not in executed.done
    assert executed.done["event"]["state"] == states.SUCCESS
    assert executed.done["event"]["name"] == "ex.add"
    assert result_of(executed) == 5
    assert executed.events == [] and executed.sends == []
    assert emitted == []


def test_started_goes_out_at_once_and_the_final_state_with_done(executor, emitted):
    executed = executor.execute(task_message("ex.started"))
    assert [e["state"] for e in emitted] == [states.STARTED]
    assert emitted[0]["id"] == "id-ex.started"
    assert executed.done["event"]["state"] == states.SUCCESS


def test_a_failing_task_ends_in_failure_with_its_exception_as_data(executor):
    executed = executor.execute(task_message("ex.divide", 1, 0))
    event = executed.done["event"]
    assert event["state"] == states.FAILURE
    assert event["exc"]["type"] == "ZeroDivisionError"
    assert "ZeroDivisionError" in event["exc"]["traceback"]


def test_an_unknown_task_fails_and_names_the_app(executor, emitted):
    executed = executor.execute(task_message("ex.nowhere"))
    event = executed.done["event"]
    assert event["state"] == states.FAILURE
    assert event["exc"]["type"] == "NotRegistered"
    assert "tests.test_unit_execute" in event["exc"]["message"]
    assert emitted == []


def test_a_body_that_is_not_args_and_kwargs_fails_the_task(executor):
    msg = task_message("ex.add")
    executed = executor.execute(Message(Cmd.TASK, msg.header, serialization.dumps(
        "just a string", "msgpack")[1]))
    assert executed.done["event"]["exc"]["type"] == "SerializationError"


def test_sys_exit_fails_the_task_and_not_the_caller(executor):
    executed = executor.execute(task_message("ex.exits"))
    assert executed.done["event"]["state"] == states.FAILURE
    assert executed.done["event"]["exc"]["type"] == "SystemExit"
    assert result_of(executor.execute(task_message("ex.add", 1, 1))) == 2


def test_reject_with_requeue_requeues_only_an_acks_late_task(executor):
    late = executor.execute(task_message("ex.rejects", acks_late=True))
    assert late.done["requeue"] is True and late.done["started"] is True
    assert "event" not in late.done
    early = executor.execute(task_message("ex.rejects"))
    assert "requeue" not in early.done


def test_ignore_result_sends_done_without_an_event(executor):
    assert "event" not in executor.execute(task_message("ex.quiet")).done


def test_a_chain_link_returns_the_next_link_with_its_result(executor):
    links = [{"task": "ex.add", "args": [10], "options": {"task_id": "second"}},
             {"task": "ex.add", "args": [100], "options": {"task_id": "third"}}]
    executed = executor.execute(task_message("ex.add", 1, 2, chain=links))
    assert result_of(executed) == 3
    [nxt] = executed.sends
    assert nxt.signature == Signature(links[0]) and nxt.args == (3,)
    assert nxt.options == {"chain": links[1:]}
    sig = nxt.signature.clone(nxt.args)
    assert sig.args == (3, 10) and sig.id == "second"


def test_an_immutable_link_does_not_take_the_result(executor):
    links = [{"task": "ex.add", "args": [1, 1], "immutable": True, "options": {}}]
    executed = executor.execute(task_message("ex.add", 1, 2, chain=links))
    [nxt] = executed.sends
    assert nxt.signature.clone(nxt.args).args == (1, 1)
    assert "chain" not in nxt.options


def test_a_failed_chain_link_fails_the_links_after_it(executor):
    links = [{"task": "ex.add", "options": {"task_id": "second"}},
             {"task": "ex.add", "options": {"task_id": "third"}}]
    executed = executor.execute(task_message("ex.divide", 1, 0, chain=links))
    assert executed.sends == []
    assert [(e["id"], e["state"]) for e in executed.events] == [
        ("second", states.FAILURE), ("third", states.FAILURE)]
    assert executed.events[0]["exc"]["type"] == "ZeroDivisionError"


def test_a_copy_is_tracked_by_its_copy_id_and_its_events_say_which(executor, emitted):
    second = copy_id("id-ex.started", "q2")
    executed = executor.execute(task_message("ex.started", copy_id=second))
    assert executed.done["id"] == second
    assert executed.done["event"]["copy"] == second
    assert emitted[0]["copy"] == second


def test_cannot_run_replaces_the_outcome_with_a_failure(executor):
    header = task_message("ex.add", 1, 2, retries=2).header
    done = executor.cannot_run(header, RuntimeError("router said no"))
    assert done["retries"] == 2
    assert done["event"]["state"] == states.FAILURE
    assert done["event"]["exc"]["message"] == "router said no"


def test_a_task_revoked_in_the_buffer_is_done_as_revoked():
    done = revoked_record({"id": "r1", "task": "ex.add", "retries": 1})
    assert (done["id"], done["retries"]) == ("r1", 1)
    assert done["event"]["state"] == states.REVOKED
    assert done["event"]["exc"]["type"] == "TaskRevokedError"
