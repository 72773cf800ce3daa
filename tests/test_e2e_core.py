"""Issue 2 end to end: tasks travel through a real router and real actor processes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import time
import uuid
from collections import defaultdict
from contextlib import closing
from fractions import Fraction
from typing import Any

import psutil
import pytest

import zq
from tests.apps import basic, pickled
from tests.apps.basic import (
    Multiply,
    Welcome,
    add,
    count_calls,
    echo,
    fail,
    fail_with_local_class,
    getpid,
    now,
    ping,
    progress,
    request_info,
    touch,
    tracked_wait_for_file,
    wait_for_file,
)
from tests.conftest import BASIC_APP, dedicated_cluster, wait_until
from zq import App, group, states
from zq.testing import is_spawned_child

app = basic.app


def watch_until_ready(events, first: dict | None = None) -> list[dict]:
    seen = [first] if first is not None else []
    for event in events:
        seen.append(event)
        if event["state"] in states.READY_STATES:
            break
    return seen


# -- calling -----------------------------------------------------------------------------


def test_delay_returns_the_result(cluster):
    assert add.delay(2, 3).get(timeout=10) == 5


def test_apply_async_with_task_id(cluster):
    task_id = f"given-{uuid.uuid4()}"
    result = add.apply_async((1, 2), task_id=task_id)
    assert result.id == task_id
    assert app.AsyncResult(task_id).get(timeout=10) == 3


def test_countdown_runs_no_earlier_than_the_countdown(cluster):
    sent_at = time.time()
    ran_at = now.apply_async(countdown=1.0).get(timeout=10)
    assert sent_at + 1.0 <= ran_at < sent_at + 6.0


def test_eta_runs_no_earlier_than_the_eta(cluster):
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    ran_at = now.apply_async(eta=eta).get(timeout=10)
    assert eta.timestamp() <= ran_at < eta.timestamp() + 5.0


def test_naive_eta_is_utc(cluster):
    eta = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=1)
    ran_at = now.apply_async(eta=eta).get(timeout=10)
    utc_eta = eta.replace(tzinfo=dt.timezone.utc).timestamp()
    assert utc_eta <= ran_at < utc_eta + 5.0


def test_countdown_task_waits_in_the_router(cluster):
    result = add.apply_async((1, 1), countdown=1.0).accepted(10)
    assert cluster.stats()["scheduled"] >= 1
    assert result.get(timeout=10) == 2


def test_already_expired_task_is_revoked_and_never_runs(cluster, tmp_path):
    marker = tmp_path / "ran"
    expired = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    result = touch.apply_async((str(marker),), expires=expired)
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    assert not marker.exists()


def test_task_expiring_before_its_countdown_is_revoked_and_never_runs(cluster, tmp_path):
    marker = tmp_path / "ran"
    result = touch.apply_async((str(marker),), countdown=1.0, expires=0.3)
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    assert not marker.exists()


def test_task_expiring_while_queued_behind_busy_actors_is_revoked(cluster, gate, tmp_path):
    marker = tmp_path / "ran"
    busy = [wait_for_file.delay(str(gate)) for _ in range(2)]
    wait_until(lambda: cluster.stats()["inflight"] >= 2, 5, "both actors to be busy")
    expires_at = time.time() + 0.3
    result = touch.apply_async((str(marker),), expires=0.3)
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)
    gate.touch()
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert [b.get(timeout=10) for b in busy] == ["released", "released"]
    assert not marker.exists()


def test_task_expiring_in_a_queue_nobody_consumes_ends_revoked_at_its_expiry(cluster):
    """The router owns the expiry timer: an expired task ends REVOKED when it expires,
    not only when some worker eventually asks for its queue."""
    result = add.apply_async((1, 2), queue=f"unconsumed-{uuid.uuid4().hex[:8]}", expires=0.3)
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=5)


def test_task_running_before_it_expires_succeeds(cluster, tmp_path):
    marker = tmp_path / "ran"
    assert touch.apply_async((str(marker),), expires=30).get(timeout=10) == str(marker)
    assert marker.exists()


def test_json_serializer(cluster):
    assert add.apply_async((2, 5), serializer="json").get(timeout=10) == 7


def test_queue_nobody_consumes_waits_until_a_worker_for_it_starts(cluster):
    queue = f"extra-{uuid.uuid4().hex[:8]}"
    result = add.apply_async((4, 5), queue=queue)
    wait_until(lambda: cluster.stats()["queued"].get(queue) == 1, 5, "the task to be queued")
    assert result.state == states.PENDING
    extra = cluster.start_workers("-Q", queue, concurrency=1)
    try:
        assert result.get(timeout=10) == 9
    finally:
        extra.stop()


def test_ignore_result_runs_but_stores_nothing(cluster, tmp_path):
    marker = tmp_path / "ran"
    result = touch.apply_async((str(marker),), ignore_result=True)
    wait_until(marker.exists, 10, "the task to run")
    assert result.get(timeout=0.5) is None
    with pytest.raises(zq.TimeoutError):
        app.AsyncResult(result.id).get(timeout=0.5)
    assert result.state == states.PENDING


def test_task_sees_its_request(cluster):
    result = request_info.apply_async(headers={"trace": "abc"}, task_id=f"r-{uuid.uuid4()}")
    info = result.get(timeout=10)
    assert info == {"id": result.id, "retries": 0, "headers": {"trace": "abc"},
                    "queue": "celery", "is_eager": False, "called_directly": False}


def test_send_task_by_name_without_importing_the_task(cluster):
    client = App(router=cluster.router)
    try:
        assert client.send_task(f"{BASIC_APP}.add", [2, 3]).get(timeout=10) == 5
    finally:
        client.close()


# -- tasks -------------------------------------------------------------------------------


def test_task_declared_with_parentheses_runs(cluster):
    assert echo.delay("hi").get(timeout=10) == "hi"


def test_task_with_explicit_name_runs_under_that_name(cluster):
    assert ping.name == "custom.ping"
    assert app.send_task("custom.ping").get(timeout=10) == "pong"


def test_class_based_task_runs(cluster):
    assert Multiply.name == f"{BASIC_APP}.Multiply"
    assert app.tasks[Multiply.name].delay(6, 7).get(timeout=10) == 42


def test_subclass_of_abstract_task_runs_and_the_base_is_not_registered(cluster):
    assert f"{BASIC_APP}.Greeter" not in app.tasks
    assert app.tasks[Welcome.name].delay("bob").get(timeout=10) == "welcome bob"


def test_task_instance_persists_in_its_process(cluster):
    """Each actor keeps one instance: its call counter counts up, one by one, per process."""
    counts_by_pid = defaultdict(list)
    for _ in range(8):
        pid, calls = count_calls.delay().get(timeout=10)
        counts_by_pid[pid].append(calls)
    for counts in counts_by_pid.values():
        assert counts == list(range(counts[0], counts[0] + len(counts)))
    assert max(len(counts) for counts in counts_by_pid.values()) >= 2


# -- results -----------------------------------------------------------------------------


def test_successful_result_api(cluster):
    result = add.delay(2, 3)
    assert result.get(timeout=10) == 5
    assert result.state == result.status == states.SUCCESS
    assert result.result == result.info == 5
    assert result.traceback is None
    assert result.ready() and result.successful() and not result.failed()


def test_result_seen_by_a_new_async_result(cluster):
    result = add.delay(3, 4)
    result.get(timeout=10)
    fresh = app.AsyncResult(result.id)
    assert fresh.state == states.SUCCESS
    assert fresh.result == 7


def test_forget_returns_the_state_to_pending(cluster):
    result = add.delay(2, 3)
    result.get(timeout=10)
    result.forget()
    assert result.state == states.PENDING
    assert app.AsyncResult(result.id).state == states.PENDING


def test_failed_task_reraises_its_exception_class(cluster):
    with pytest.raises(ValueError, match="boom"):
        fail.delay("boom").get(timeout=10)


def test_failed_result_api(cluster):
    result = fail.delay("boom")
    error = result.get(timeout=10, propagate=False)
    assert isinstance(error, ValueError) and str(error) == "boom"
    assert result.state == result.status == states.FAILURE
    assert isinstance(result.result, ValueError) and isinstance(result.info, ValueError)
    assert "ValueError: boom" in result.traceback
    assert result.ready() and result.failed() and not result.successful()


def test_exception_class_the_client_cannot_import_raises_task_error(cluster):
    with pytest.raises(zq.TaskError) as raised:
        fail_with_local_class.delay("hidden").get(timeout=10)
    error = raised.value
    assert error.exc_type.endswith("HiddenError")
    assert error.message == "hidden"
    assert "HiddenError: hidden" in error.traceback


def test_get_timeout_on_an_unfinished_task_raises_timeout_error(cluster, gate):
    result = wait_for_file.delay(str(gate))
    started = time.monotonic()
    with pytest.raises(zq.TimeoutError):
        result.get(timeout=0.5)
    assert 0.4 < time.monotonic() - started < 3.0
    gate.touch()
    assert result.get(timeout=10) == "released"


def test_track_started_shows_started_while_the_task_runs(cluster, gate):
    result = tracked_wait_for_file.delay(str(gate))
    wait_until(lambda: result.state == states.STARTED, 10, "STARTED")
    assert not result.ready()
    gate.touch()
    assert result.get(timeout=10) == "released"


def test_untracked_task_is_sent_not_started_while_it_runs(cluster, gate):
    result = wait_for_file.delay(str(gate))
    wait_until(lambda: cluster.stats()["inflight"] >= 1, 5, "the task to be running")
    assert result.state == states.PENDING


def test_custom_state_with_meta_is_visible_as_info(cluster, tmp_path, gate):
    start = tmp_path / "start"
    start.touch()
    result = progress.delay(2, str(start), str(gate))
    wait_until(lambda: result.state == "PROGRESS" and result.info == {"done": 2, "total": 2},
               10, "the second PROGRESS")
    assert not result.ready()
    gate.touch()
    assert result.get(timeout=10) == 2


# -- serialization -----------------------------------------------------------------------

NESTED = {
    "aware": dt.datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=dt.timezone.utc),
    "naive": dt.datetime(2024, 5, 17, 12, 30, 15),
    "day": dt.date(2024, 5, 17),
    "bytes": b"\x00\xffzq",
    "tuple": (1, "two", (3.0, None)),
    "set": {1, 2, 3},
    "nested": [{"a": [1, {"b": (True, False)}]}, [], {}],
    "text": "h\u00e9llo \u2603",
    "big": 2**62,
}


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
def test_values_survive_a_round_trip_through_a_task(cluster, serializer):
    assert echo.apply_async((NESTED,), serializer=serializer).get(timeout=10) == NESTED


def test_result_types_survive_exactly(cluster):
    value = echo.delay(NESTED).get(timeout=10)
    assert type(value["tuple"]) is tuple and type(value["tuple"][2]) is tuple
    assert type(value["set"]) is set
    assert type(value["bytes"]) is bytes
    assert value["aware"].tzinfo is not None and value["naive"].tzinfo is None


def test_unserializable_argument_is_a_clear_error_at_the_caller(cluster):
    with pytest.raises(zq.SerializationError, match="object"):
        echo.delay(object())


def test_pickle_is_refused_by_a_worker_that_does_not_accept_it(cluster):
    result = add.apply_async((1, 2), serializer="pickle")
    with pytest.raises(zq.ContentDisallowed):
        result.get(timeout=10)
    assert result.state == states.FAILURE


def test_pickle_works_when_both_sides_accept_it(tmp_path):
    with dedicated_cluster(tmp_path, app=pickled.app, module="tests.apps.pickled",
                           concurrency=1):
        result = pickled.double.apply_async((Fraction(1, 3),), serializer="pickle")
        assert result.get(timeout=10) == Fraction(2, 3)


# -- streaming ---------------------------------------------------------------------------


def test_watch_yields_current_state_then_every_change_in_order(cluster, gate):
    result = progress.delay(3, str(gate))
    with closing(app.watch([result.id], timeout_s=10)) as events:
        first = next(events)
        gate.touch()
        seen = watch_until_ready(events, first)
    assert [e["state"] for e in seen] == [states.SENT, "PROGRESS", "PROGRESS", "PROGRESS",
                                          states.SUCCESS]
    assert [e["info"] for e in seen[1:4]] == [{"done": n, "total": 3} for n in (1, 2, 3)]
    assert seen[-1]["info"] == 3
    assert [e["version"] for e in seen] == [1, 2, 3, 4, 5]
    sequence = [e["seq"] for e in seen[1:]]
    assert sequence == sorted(sequence)


def test_watch_misses_no_change_of_a_busy_task(cluster, gate):
    steps = 300
    result = progress.delay(steps, str(gate))
    with closing(app.watch([result.id], timeout_s=15)) as events:
        first = next(events)
        gate.touch()
        seen = watch_until_ready(events, first)
    assert [e["info"]["done"] for e in seen[1:-1]] == list(range(1, steps + 1))
    assert [e["version"] for e in seen] == list(range(1, steps + 3))


def test_watch_follows_a_running_task_to_its_end(cluster, gate):
    result = tracked_wait_for_file.delay(str(gate))
    with closing(app.watch([result.id], timeout_s=10)) as events:
        first = next(events)
        gate.touch()
        seen = watch_until_ready(events, first)
    assert [e["state"] for e in seen] in ([states.SENT, states.STARTED, states.SUCCESS],
                                          [states.STARTED, states.SUCCESS])


def test_late_watcher_gets_the_final_state_first(cluster):
    result = add.delay(20, 22)
    result.get(timeout=10)
    with closing(app.watch([result.id], timeout_s=2)) as events:
        first = next(events)
    assert first["id"] == result.id
    assert first["state"] == states.SUCCESS
    assert first["info"] == 42


def test_watch_without_ids_sees_new_tasks(cluster, gate):
    waiting = wait_for_file.delay(str(gate))
    with closing(app.watch(timeout_s=10)) as events:
        next(events)  # the subscription is in place once anything arrives
        result = add.delay(1, 41)
        finished = next((e for e in events
                         if e["id"] == result.id and e["state"] == states.SUCCESS), None)
    assert finished is not None
    assert finished["info"] == 42
    gate.touch()
    assert waiting.get(timeout=10) == "released"


# -- scheduling and supervision ----------------------------------------------------------


def test_long_task_does_not_hold_back_short_ones(cluster, gate):
    """Credit-based dispatch: with two actors and prefetch 1, short tasks never queue
    behind a long one on a busy actor."""
    long_task = wait_for_file.delay(str(gate))
    wait_until(lambda: cluster.stats()["inflight"] >= 1, 5, "the long task to be running")
    started = time.monotonic()
    shorts = [add.delay(i, i) for i in range(5)]
    assert [r.get(timeout=5) for r in shorts] == [0, 2, 4, 6, 8]
    assert time.monotonic() - started < 1.5
    assert not long_task.ready()
    gate.touch()
    assert long_task.get(timeout=10) == "released"


def test_result_is_not_held_back_by_the_next_prefetched_task(tmp_path):
    """With --prefetch, a task that finished while another waits in the actor's buffer
    must be reported before that next task runs, not after it."""
    first_gate, slow_gate = tmp_path / "first", tmp_path / "slow"
    with dedicated_cluster(tmp_path / "cluster", concurrency=1,
                           workers_args=["--prefetch", "4"]) as started:
        try:
            first = tracked_wait_for_file.delay(str(first_gate))
            wait_until(lambda: first.state == states.STARTED, 10, "the first task to start")
            quick = add.delay(1, 1)
            slow = wait_for_file.delay(str(slow_gate))
            wait_until(lambda: started.stats()["inflight"] == 3, 5,
                       "both tasks to be prefetched by the busy actor")
            first_gate.touch()
            assert first.get(timeout=10) == "released"
            assert quick.get(timeout=5) == 2
            assert not slow.ready()
        finally:
            first_gate.touch()
            slow_gate.touch()


def test_stopped_workers_leave_the_router_stats(cluster):
    """A warm shutdown tells the router about each actor; its host should go with them,
    not linger until the heartbeat timeout and then be reported lost."""
    hosts_before = cluster.stats()["hosts"]
    extra = cluster.start_workers("-Q", "departing", concurrency=1)
    assert len(cluster.stats()["hosts"]) == len(hosts_before) + 1
    extra.stop()
    wait_until(lambda: cluster.stats()["hosts"] == hosts_before, 3,
               "the stopped host to leave the router's stats")


def _actor_pids(supervisor_pid: int) -> set[int]:
    """The live actor processes of a supervisor (not its resource tracker, not zombies)."""
    pids = set()
    for child in psutil.Process(supervisor_pid).children():
        try:
            if is_spawned_child(" ".join(child.cmdline())):
                pids.add(child.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return pids


def test_killed_actor_is_replaced_and_tasks_keep_working(tmp_path):
    with dedicated_cluster(tmp_path, concurrency=2) as started:
        supervisor = started.workers[0].pid
        before = _actor_pids(supervisor)
        victim = getpid.delay().get(timeout=10)
        assert victim in before
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: len(_actor_pids(supervisor) - before) == 1
                   and started.actor_count() == 2, 5, "a replacement actor")
        assert time.monotonic() - killed_at < 2.0
        pids = group(getpid.s(0.3) for _ in range(4)).apply_async().get(timeout=10)
        assert set(pids) == _actor_pids(supervisor)
        assert victim not in pids


# -- the results actor -------------------------------------------------------------------


def test_results_stored_in_sqlite_under_the_data_dir(cluster):
    result = add.delay(5, 5)
    result.get(timeout=10)
    db = cluster.data_dir / "results.sqlite3"

    def stored() -> Any:
        # Written a batch at a time, a few milliseconds after the result went out.
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT state FROM results WHERE id = ?",
                                (result.id,)).fetchone()

    assert wait_until(stored, 5, "the result in the store") == (states.SUCCESS,)


def test_memory_results_backend_works_and_writes_no_store(tmp_path):
    with dedicated_cluster(tmp_path, concurrency=1,
                           router_args=["--results", "memory"]) as started:
        result = add.delay(2, 2)
        assert result.get(timeout=10) == 4
        assert app.AsyncResult(result.id).state == states.SUCCESS
        assert not (started.data_dir / "results.sqlite3").exists()


# -- canvas ------------------------------------------------------------------------------


def test_chain_passes_each_result_on(cluster):
    assert (add.s(2, 2) | add.s(4)).delay().get(timeout=10) == 8


def test_chain_with_a_failing_link_fails_its_last_result(cluster):
    result = (add.s(1, 1) | fail.s() | add.s(1)).delay()
    with pytest.raises(ValueError):
        result.get(timeout=10)
    assert result.state == states.FAILURE


def test_group_of_a_hundred(cluster):
    results = group(add.s(i, i) for i in range(100)).apply_async()
    assert results.get(timeout=20) == [2 * i for i in range(100)]


def test_a_finished_task_says_which_actor_ran_it_and_for_how_long(cluster):
    """Kept with the result (Celery's extended results have `worker`), for any reader."""
    result = add.delay(20, 22)
    assert result.get(timeout=10) == 42
    fresh = App("reader", router=cluster.router)
    try:
        stored = fresh.AsyncResult(result.id)
        wait_until(lambda: stored.state == states.SUCCESS, 5, "the stored state")
        assert stored.worker is not None and stored.worker.count("/") == 2
        assert stored.runtime is not None and 0 <= stored.runtime < 5
    finally:
        fresh.close()
