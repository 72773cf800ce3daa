"""Issue 3 end to end: the whole Celery task API against real ``zq router``/``zq workers``.

Most tests share one cluster (``shared``) whose worker hosts each have a purpose:

* ``a`` and ``b``: ``-n 1`` each on the default queue, so "two workers" means two hosts;
* ``media``: ``-Q video,image``;
* ``solo``: ``-Q solo -l WARNING``, one actor, so the tasks sent to it run in order: when
  a task sent after others has finished, the others have finished and their states are
  stored (:func:`flush_solo`);
* ``noresult``: ``-A tests.apps.api_noresult``, an app with ``task_ignore_result=True``.

Time limits kill actors, so they get a cluster of their own (``limits``); recycling
actors gets a dedicated cluster per test.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

import zq
from tests.apps import api, api_noresult, defaults
from tests.apps.api import read_records
from tests.conftest import connect, dedicated_cluster, wait_until
from zq import App, group, states
from zq.testing import Cluster, Process, is_spawned_child

API = "tests.apps.api"
DEFAULTS = "tests.apps.defaults"
app = api.app


@dataclass
class Shared:
    cluster: Cluster
    hosts: dict[str, Process]

    def pids(self, host: str) -> set[int]:
        return actor_pids(self.hosts[host])


def actor_pids(host: Process) -> set[int]:
    """The live actor processes of a ``zq workers`` host."""
    pids = set()
    for child in psutil.Process(host.pid).children():
        try:
            if is_spawned_child(" ".join(child.cmdline())) and child.status() != "zombie":
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    with Cluster(tmp_path_factory.mktemp("api"), app=API, concurrency=1) as cluster:
        hosts = {
            "a": cluster.workers[0],
            "b": cluster.start_workers(concurrency=1),
            "media": cluster.start_workers("-Q", "video,image", concurrency=1),
            "solo": cluster.start_workers("-Q", "solo", "-l", "WARNING", concurrency=1),
            # A second -A overrides the cluster's (click keeps an option's last value).
            "noresult": cluster.start_workers("-A", "tests.apps.api_noresult", concurrency=1),
        }
        try:
            yield Shared(cluster, hosts)
        finally:
            app.close()
            api_noresult.app.close()


@pytest.fixture
def shared(shared_cluster: Shared) -> Shared:
    connect(app, shared_cluster.cluster)
    connect(api_noresult.app, shared_cluster.cluster)
    return shared_cluster


@pytest.fixture(scope="module")
def limits_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("limits"), app=API, concurrency=2,
                 workers_args=["--time-limit", "2", "--soft-time-limit", "1"]) as cluster:
        try:
            yield cluster
        finally:
            app.close()


@pytest.fixture
def limits(limits_cluster: Cluster) -> Cluster:
    """Workers started with ``--time-limit 2 --soft-time-limit 1``."""
    connect(app, limits_cluster)
    return limits_cluster


def flush_solo() -> int:
    """Run a task on the one-actor ``solo`` queue; returns the actor's pid. Everything sent
    to ``solo`` before it has finished once it returns."""
    return api.getpid.apply_async(queue="solo").get(timeout=10)


def start_hold(queue: str, tmp_path: Path, gate: Path) -> None:
    """Keep the actor consuming ``queue`` busy until ``gate`` exists."""
    started = tmp_path / f"hold-{queue}-started"
    api.hold.apply_async((str(started), str(gate)), queue=queue)
    wait_until(started.exists, 10, f"the hold task to start on {queue}")


def gaps(values: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(values)]


# -- the request context -----------------------------------------------------------------


def test_request_ids_name_and_arguments(shared):
    result = api.request_info.apply_async((1, "two"), {"three": 3})
    info = result.get(timeout=10)
    assert info["id"] == result.id
    assert info["task"] == "tests.apps.api.request_info"
    assert info["args"] == [1, "two"]
    assert info["kwargs"] == {"three": 3}
    assert info["retries"] == 0


def test_request_eta_and_expires(shared):
    sent_at = time.time()
    info = api.request_info.apply_async(countdown=0.2, expires=30).get(timeout=10)
    assert sent_at + 0.2 <= info["eta"] < sent_at + 5
    assert sent_at + 30 <= info["expires"] < sent_at + 35


def test_request_hostname_is_the_workers_host(shared):
    assert api.request_info.delay().get(timeout=10)["hostname"] == socket.gethostname()


def test_request_delivery_info_of_a_queued_task(shared):
    info = api.request_info.apply_async(queue="video", priority=4).get(timeout=10)
    delivery = info["delivery_info"]
    assert delivery["queue"] == "video"
    assert delivery["priority"] == 4
    assert delivery["redelivered"] is False
    assert {"exchange", "routing_key"} <= set(delivery)


def test_request_delivery_info_of_a_task_routed_by_exchange(shared):
    info = api.request_info.apply_async(exchange="media",
                                        routing_key="video.compress").get(timeout=10)
    delivery = info["delivery_info"]
    assert delivery["exchange"] == "media"
    assert delivery["routing_key"] == "video.compress"
    assert delivery["queue"] == "video"


def test_request_is_not_eager_nor_called_directly_in_a_worker(shared):
    info = api.request_info.delay().get(timeout=10)
    assert info["is_eager"] is False
    assert info["called_directly"] is False


def test_request_is_eager_under_apply():
    info = api.request_info.apply((1,), {"k": 2}).get()
    assert info["is_eager"] is True
    assert info["called_directly"] is False
    assert info["args"] == [1] and info["kwargs"] == {"k": 2}


def test_request_called_directly_when_called_as_a_function():
    info = api.request_info(5)
    assert info["called_directly"] is True
    assert info["is_eager"] is False


def test_request_headers(shared):
    info = api.request_info.apply_async(headers={"trace": "abc", "n": 7}).get(timeout=10)
    assert info["headers"] == {"trace": "abc", "n": 7}


def test_task_sent_from_a_task_knows_its_parent_and_root(shared):
    root = api.lineage.delay(2)
    first = root.get(timeout=10)
    second = app.AsyncResult(first["child"]).get(timeout=10)
    third = app.AsyncResult(second["child"]).get(timeout=10)
    assert (first["root_id"], first["parent_id"]) == (root.id, None)
    assert (second["root_id"], second["parent_id"]) == (root.id, root.id)
    assert (third["root_id"], third["parent_id"]) == (root.id, second["id"])
    assert third["child"] is None


# -- logging -----------------------------------------------------------------------------


def test_task_logger_writes_the_task_name_and_id(shared):
    text = uuid.uuid4().hex
    result = api.log_lines.delay(text)
    assert result.get(timeout=10) == text
    expected = f"tests.apps.api.log_lines[{result.id}]: info line: {text}"
    wait_until(lambda: expected in shared.cluster.logs(), 5, "the task's log line")


def test_loglevel_warning_hides_info_task_logs(shared):
    text = uuid.uuid4().hex
    result = api.log_lines.apply_async((text,), queue="solo")
    assert result.get(timeout=10) == text
    solo = shared.hosts["solo"]
    warning = f"tests.apps.api.log_lines[{result.id}]: warning line: {text}"
    wait_until(lambda: warning in solo.log(), 5, "the task's warning line")
    assert f"info line: {text}" not in solo.log()


# -- task classes ------------------------------------------------------------------------


def test_app_task_cls_is_the_base_of_every_task(shared):
    assert isinstance(api.add, api.ApiTask)
    assert api.init_count.delay().get(timeout=10)[2] == "ApiTask"


def test_task_class_init_runs_once_per_process(shared):
    runs = group(api.init_count.s() for _ in range(6)).apply_async().get(timeout=10)
    pids = Counter(pid for pid, _, _ in runs)
    assert max(pids.values()) >= 2
    assert [count for _, count, _ in runs] == [1] * 6


def test_base_option_gives_the_task_that_class(shared):
    assert isinstance(api.shout, api.Shouting)
    assert api.shout.delay("hello").get(timeout=10) == ["HELLO", False]


# -- retrying ----------------------------------------------------------------------------


def test_retry_keeps_the_id_and_counts_retries_up(shared, tmp_path):
    path = tmp_path / "attempts"
    result = api.retry_until.delay(str(path), 2, 0.05)
    assert result.get(timeout=10) == 2
    attempts = read_records(path)
    assert [a["retries"] for a in attempts] == [0, 1, 2]
    assert {a["id"] for a in attempts} == {result.id}
    assert result.retries == 2


def test_retry_state_holds_the_exception_while_waiting_for_the_countdown(shared, tmp_path):
    result = api.retry_until.delay(str(tmp_path / "attempts"), 1, 1.0)
    wait_until(lambda: result.state == states.RETRY, 5, "the RETRY state")
    info = result.info
    assert isinstance(info, api.FlakyError)
    assert str(info) == "attempt 0"
    assert result.get(timeout=10) == 1


def test_retry_countdown_waits_in_the_router(shared, tmp_path):
    path = tmp_path / "attempts"
    result = api.retry_until.delay(str(path), 1, 0.6)
    wait_until(lambda: read_records(path) and shared.cluster.stats()["scheduled"] >= 1, 5,
               "the retry to wait in the router's timers")
    assert result.get(timeout=10) == 1
    first, second = read_records(path)
    assert second["t"] - first["t"] >= 0.6


def test_retry_past_max_retries_raises_the_given_exc(shared, tmp_path):
    path = tmp_path / "attempts"
    result = api.retry_exhausted.delay(str(path))
    with pytest.raises(api.FlakyError, match="attempt 2"):
        result.get(timeout=10)
    assert [a["retries"] for a in read_records(path)] == [0, 1, 2]
    assert result.state == states.FAILURE


def test_retry_past_max_retries_without_exc_raises_max_retries_exceeded(shared, tmp_path):
    path = tmp_path / "attempts"
    with pytest.raises(zq.MaxRetriesExceededError):
        api.retry_without_exc.delay(str(path)).get(timeout=10)
    assert [a["retries"] for a in read_records(path)] == [0, 1]


def test_max_retries_none_keeps_retrying(shared, tmp_path):
    path = tmp_path / "attempts"
    assert api.retry_forever.delay(str(path), 5).get(timeout=10) == 5
    assert [a["retries"] for a in read_records(path)] == [0, 1, 2, 3, 4, 5]


def test_retry_goes_back_to_the_queue_given_per_call(shared):
    info = api.retry_where.apply_async(queue="video").get(timeout=10)
    assert info["queue"] == "video"
    assert info["pid"] in shared.pids("media")


def test_retry_goes_back_to_the_queue_the_exchange_routed_it_to(shared):
    info = api.retry_where.apply_async(exchange="media",
                                       routing_key="video.retry").get(timeout=10)
    assert info["pid"] in shared.pids("media")


# -- automatic retries -------------------------------------------------------------------


def test_autoretry_for_retries_until_success(shared, tmp_path):
    path = tmp_path / "attempts"
    assert api.auto_retry.delay(str(path), 2).get(timeout=10) == 2
    assert [a["retries"] for a in read_records(path)] == [0, 1, 2]


def test_autoretry_stops_at_retry_kwargs_max_retries(shared, tmp_path):
    path = tmp_path / "attempts"
    with pytest.raises(ConnectionError, match="attempt 2"):
        api.auto_retry.delay(str(path), 100).get(timeout=10)
    assert [a["retries"] for a in read_records(path)] == [0, 1, 2]


def test_dont_autoretry_for_fails_at_once(shared, tmp_path):
    path = tmp_path / "attempts"
    with pytest.raises(ValueError, match="not worth retrying"):
        api.auto_retry_except.delay(str(path)).get(timeout=10)
    assert len(read_records(path)) == 1


def test_retry_backoff_without_jitter_doubles_the_wait(shared, tmp_path):
    path = tmp_path / "attempts"
    assert api.auto_backoff.delay(str(path), 3).get(timeout=10) == 3
    waits = gaps([a["t"] for a in read_records(path)])
    assert len(waits) == 3
    # The router holds each retry at least its countdown: 0.2, 0.4, 0.8 s (factor 0.2).
    # The upper bound only says it was not some other, longer countdown.
    for waited, countdown in zip(waits, [0.2, 0.4, 0.8]):
        assert countdown <= waited < countdown + 1.0


def test_ignore_is_never_autoretried(shared, tmp_path):
    path = tmp_path / "attempts"
    result = api.auto_ignore.delay(str(path))
    wait_until(lambda: read_records(path), 10, "the first attempt")
    time.sleep(0.5)  # a retry would have run by now (countdown 0.05)
    assert len(read_records(path)) == 1
    assert result.state == states.PENDING


def test_retry_raised_by_hand_is_never_autoretried(shared, tmp_path):
    path = tmp_path / "attempts"
    result = api.auto_retry_signal.delay(str(path))
    wait_until(lambda: result.state == states.RETRY, 10, "the RETRY state")
    time.sleep(0.5)  # an automatic retry would have run by now (countdown 0.05)
    assert len(read_records(path)) == 1


# -- custom states -----------------------------------------------------------------------


def test_custom_state_is_visible_as_state_and_info(shared, tmp_path, gate):
    start = tmp_path / "start"
    start.touch()
    result = api.report_progress.delay(3, str(start), str(gate))
    wait_until(lambda: result.state == "PROGRESS" and result.info == {"done": 3, "total": 3},
               10, "the last PROGRESS")
    assert not result.ready()
    gate.touch()
    assert result.get(timeout=10) == 3


def test_custom_states_stream_through_watch_with_their_info(shared, tmp_path):
    start = tmp_path / "start"
    result = api.report_progress.delay(3, str(start))
    seen = []
    with closing(app.watch([result.id], timeout_s=10)) as events:
        seen.append(next(events))
        start.touch()
        for event in events:
            seen.append(event)
            if event["state"] in states.READY_STATES:
                break
    assert all("info" in event for event in seen)
    progress = [e["info"] for e in seen if e["state"] == "PROGRESS"]
    assert progress == [{"done": n, "total": 3} for n in (1, 2, 3)]
    assert (seen[-1]["state"], seen[-1]["info"]) == (states.SUCCESS, 3)


# -- ignore_result -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["task_option", "per_call"])
def test_ignored_success_is_not_stored(shared, tmp_path, how):
    marker = tmp_path / "ran"
    if how == "task_option":
        result = api.touch_ignored.apply_async((str(marker),), queue="solo")
    else:
        result = api.touch.apply_async((str(marker),), queue="solo", ignore_result=True)
    flush_solo()
    assert marker.exists()
    assert result.state == states.PENDING


def test_ignored_success_is_not_stored_app_wide(shared, tmp_path):
    marker = tmp_path / "ran"
    result = api_noresult.touch.delay(str(marker))
    flush = api_noresult.touch.apply_async((str(tmp_path / "flush"),), ignore_result=False)
    assert flush.get(timeout=10)
    assert marker.exists()
    assert result.state == states.PENDING


def test_app_wide_ignore_result_holds_in_the_worker_for_any_sender(shared, tmp_path):
    marker = tmp_path / "ran"
    client = App(router=shared.cluster.router)
    try:
        result = client.send_task("tests.apps.api_noresult.touch", [str(marker)],
                                  queue="noresult")
        flush = client.send_task("tests.apps.api_noresult.fail", ["flush"], queue="noresult")
        with pytest.raises(ValueError):
            flush.get(timeout=10)
        assert marker.exists()
        assert result.state == states.PENDING
    finally:
        client.close()


@pytest.mark.parametrize("how", ["task_option", "per_call", "app_wide"])
def test_ignored_result_still_records_a_failure(shared, how):
    if how == "task_option":
        result = api.fail_ignored.delay("still recorded")
    elif how == "per_call":
        result = api.fail.apply_async(("still recorded",), ignore_result=True)
    else:
        result = api_noresult.fail.delay("still recorded")
    # As in Celery, get() of a result sent with ignore_result returns None at once; the
    # failure is recorded all the same, and a result asked for by id raises it.
    assert result.get(timeout=0.1) is None
    with pytest.raises(ValueError, match="still recorded"):
        api.app.AsyncResult(result.id).get(timeout=10)
    assert result.state == states.FAILURE


# -- handlers ----------------------------------------------------------------------------


def handler_calls(path: Path) -> list[dict]:
    calls = read_records(path)
    assert len({c["pid"] for c in calls} | {os.getpid()}) > 1, "handlers ran in the client"
    return calls


def test_handlers_of_a_successful_task(shared, tmp_path):
    path = str(tmp_path / "calls")
    result = api.handled.apply_async((path,), {"outcome": "succeed"})
    assert result.get(timeout=10) == "ok succeed"
    before, success, after = handler_calls(Path(path))
    assert before["handler"] == "before_start"
    assert (before["task_id"], before["args"], before["kwargs"]) == (
        result.id, [path], {"outcome": "succeed"})
    assert success["handler"] == "on_success"
    assert (success["retval"], success["task_id"], success["args"], success["kwargs"]) == (
        "ok succeed", result.id, [path], {"outcome": "succeed"})
    assert after["handler"] == "after_return"
    assert (after["status"], after["retval"], after["task_id"], after["einfo"]) == (
        states.SUCCESS, repr("ok succeed"), result.id, None)
    assert before["pid"] == success["pid"] == after["pid"] != os.getpid()


def test_handlers_of_a_failed_task(shared, tmp_path):
    path = str(tmp_path / "calls")
    result = api.handled.delay(path, "fail")
    with pytest.raises(ValueError):
        result.get(timeout=10)
    before, failure, after = handler_calls(Path(path))
    assert before["handler"] == "before_start"
    assert failure["handler"] == "on_failure"
    assert (failure["exc"], failure["task_id"], failure["args"], failure["kwargs"]) == (
        repr(ValueError("handled failure")), result.id, [path, "fail"], {})
    assert failure["einfo"]["exception"] == repr(ValueError("handled failure"))
    assert "ValueError: handled failure" in failure["einfo"]["traceback"]
    assert after["handler"] == "after_return"
    assert (after["status"], after["retval"], after["task_id"]) == (
        states.FAILURE, repr(ValueError("handled failure")), result.id)
    assert "ValueError: handled failure" in after["einfo"]["traceback"]


def test_handlers_of_a_retried_task(shared, tmp_path):
    path = str(tmp_path / "calls")
    result = api.handled.delay(path, "retry")
    assert result.get(timeout=10) == "ok retry"
    calls = handler_calls(Path(path))
    assert [c["handler"] for c in calls] == ["before_start", "on_retry", "after_return",
                                             "before_start", "on_success", "after_return"]
    retry = calls[1]
    assert (retry["exc"], retry["task_id"], retry["args"]) == (
        repr(api.FlakyError("retry me")), result.id, [path, "retry"])
    assert "FlakyError: retry me" in retry["einfo"]["traceback"]
    assert [calls[2]["status"], calls[5]["status"]] == [states.RETRY, states.SUCCESS]


def test_exception_in_a_handler_is_logged_and_the_actor_stays_up(shared):
    pid = flush_solo()
    result = api.handler_raises.apply_async(queue="solo")
    assert result.get(timeout=10) == pid
    log = f"on_success handler of task tests.apps.api.handler_raises[{result.id}] raised"
    solo = shared.hosts["solo"]
    wait_until(lambda: log in solo.log(), 5, "the handler's error in the log")
    assert "RuntimeError: on_success handler broke" in solo.log()
    assert flush_solo() == pid


# -- Ignore, Reject, unknown tasks -------------------------------------------------------


def test_ignore_records_nothing_and_the_worker_takes_the_next_task(shared, tmp_path):
    path = tmp_path / "attempts"
    pid = flush_solo()
    result = api.ignored.apply_async((str(path),), queue="solo")
    assert flush_solo() == pid
    assert len(read_records(path)) == 1
    assert result.state == states.PENDING


def test_reject_with_requeue_is_redelivered(shared, tmp_path):
    path = tmp_path / "attempts"
    delivery = api.reject_once.delay(str(path)).get(timeout=10)
    assert delivery["redelivered"] is True
    assert [a["redelivered"] for a in read_records(path)] == [False, True]


def test_reject_forever_fails_after_max_redeliveries(shared, tmp_path):
    path = tmp_path / "attempts"
    result = api.reject_forever.delay(str(path))
    with pytest.raises(zq.Reject, match="max_redeliveries=2"):
        result.get(timeout=10)
    assert [a["redelivered"] for a in read_records(path)] == [False, True, True]
    assert result.state == states.FAILURE


def test_reject_without_requeue_drops_the_task(shared, tmp_path):
    path = tmp_path / "attempts"
    result = api.reject_drop.apply_async((str(path),), queue="solo")
    flush_solo()
    assert len(read_records(path)) == 1
    # Recorded as REJECTED, a final state: get() raises Reject rather than wait forever.
    assert result.state == states.REJECTED
    with pytest.raises(zq.Reject):
        result.get(timeout=10)


def test_unknown_task_waits_parked_and_the_worker_goes_on(shared):
    """No worker has it: it is never handed to one (where it would fail NotRegistered);
    it waits, parked, while the queue's other tasks run, and revoking it ends it."""
    pid = flush_solo()
    result = app.send_task("tests.apps.api.no_such_task", queue="solo")
    assert flush_solo() == pid
    assert app.control.stats()["parked"] == {"solo": {"tests.apps.api.no_such_task": 1}}
    result.revoke()
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert app.control.stats()["parked"] == {}


# -- hard and soft time limits -----------------------------------------------------------


def read_pid(path: Path) -> int:
    return int(wait_until(lambda: path.exists() and path.read_text(), 10, "the task's pid"))


def assert_killed_and_replaced(cluster: Cluster, result, victim: int, limit_s: float) -> None:
    started = time.monotonic()
    with pytest.raises(zq.TimeLimitExceeded):
        result.get(timeout=10)
    assert time.monotonic() - started < limit_s + 3.0
    assert result.state == states.FAILURE
    host = cluster.workers[0]
    wait_until(lambda: victim not in actor_pids(host) and len(actor_pids(host)) == 2
               and cluster.actor_count() == 2, 10, "a replacement actor")


def test_time_limit_task_option_kills_the_task_and_replaces_its_actor(limits, tmp_path):
    pid_path = tmp_path / "pid"
    result = api.hard_limited.delay(str(pid_path))
    victim = read_pid(pid_path)
    others = [api.add.delay(i, i) for i in range(3)]
    assert [r.get(timeout=10) for r in others] == [0, 2, 4]
    assert_killed_and_replaced(limits, result, victim, 0.5)


def test_time_limit_per_call_kills_the_task_and_replaces_its_actor(limits, tmp_path):
    pid_path = tmp_path / "pid"
    result = api.sleeper.apply_async((str(pid_path), 10), time_limit=0.5)
    victim = read_pid(pid_path)
    others = [api.add.delay(i, i) for i in range(3)]
    assert [r.get(timeout=10) for r in others] == [0, 2, 4]
    assert_killed_and_replaced(limits, result, victim, 0.5)


def test_worker_time_limit_kills_the_task_and_replaces_its_actor(limits, tmp_path):
    pid_path = tmp_path / "pid"
    result = api.stubborn.delay(str(pid_path), 10)
    victim = read_pid(pid_path)
    others = [api.add.delay(i, i) for i in range(3)]
    assert [r.get(timeout=10) for r in others] == [0, 2, 4]
    assert_killed_and_replaced(limits, result, victim, 2.0)


def test_soft_time_limit_task_option_is_raised_inside_the_task(limits):
    outcome, kind, elapsed = api.soft_limited.delay(5).get(timeout=10)
    assert (outcome, kind) == ("caught", "SoftTimeLimitExceeded")
    assert 0.25 <= elapsed < 0.9


def test_soft_time_limit_per_call_is_raised_inside_the_task(limits):
    outcome, kind, elapsed = api.soft_catcher.apply_async((5,), soft_time_limit=0.3).get(
        timeout=10)
    assert (outcome, kind) == ("caught", "SoftTimeLimitExceeded")
    assert 0.25 <= elapsed < 0.9


def test_worker_soft_time_limit_is_raised_inside_the_task(limits):
    outcome, kind, elapsed = api.soft_catcher.delay(5).get(timeout=10)
    assert (outcome, kind) == ("caught", "SoftTimeLimitExceeded")
    assert 0.95 <= elapsed < 1.8


# -- recycling actors --------------------------------------------------------------------


def lost(values: list) -> list[BaseException]:
    return [v for v in values if isinstance(v, BaseException)]


def test_max_tasks_per_child_recycles_actors_and_loses_nothing(tmp_path):
    with dedicated_cluster(tmp_path, app=app, module=API, concurrency=2,
                           workers_args=["--max-tasks-per-child", "2"]) as started:
        pids = group(api.getpid.s(0.05) for _ in range(10)).apply_async().get(
            timeout=20, propagate=False)
        wait_until(lambda: started.actor_count() == 2, 10, "the last replacement actors")
    assert lost(pids) == []
    runs_per_actor = Counter(pids)
    assert max(runs_per_actor.values()) == 2
    assert len(runs_per_actor) >= 5


def test_max_memory_per_child_recycles_an_actor_holding_memory(tmp_path):
    with dedicated_cluster(tmp_path, app=app, module=API, concurrency=1,
                           workers_args=["--max-memory-per-child", "60000"]) as started:
        first = api.getpid.delay().get(timeout=10)
        assert api.getpid.delay().get(timeout=10) == first
        held = api.hog.delay(64, 0.3)
        waiting = group(api.getpid.s() for _ in range(4)).apply_async()
        assert held.get(timeout=10) == first
        after = waiting.get(timeout=20, propagate=False)
        wait_until(lambda: started.actor_count() == 1, 10, "the replacement actor")
    assert lost(after) == []
    assert first not in after
    assert len(set(after)) == 1


# -- rate limits -------------------------------------------------------------------------


def assert_spaced(starts: list[float], interval_s: float, slack_s: float = 0.15) -> None:
    """No burst past the rate: any k + 1 consecutive starts span at least k intervals. The
    router releases tasks on that schedule; ``slack_s`` lets one start come late (the
    delivery to the actor is not instant on a busy machine) without failing the next."""
    for i, first in enumerate(starts):
        for j in range(i + 1, len(starts)):
            assert starts[j] - first >= (j - i) * interval_s - slack_s, (i, j, starts)


def test_rate_limit_holds_across_workers_together(shared):
    runs = group(api.rate_limited.s() for _ in range(6)).apply_async().get(timeout=20)
    starts = sorted(started for started, _ in runs)
    assert_spaced(starts, 0.2)
    pids = {pid for _, pid in runs}
    assert pids & shared.pids("a") and pids & shared.pids("b")


def test_rate_limit_changed_at_runtime(shared):
    name = api.rate_changed.name
    unlimited = group(api.rate_changed.s() for _ in range(3)).apply_async().get(timeout=10)
    assert max(s for s, _ in unlimited) - min(s for s, _ in unlimited) < 0.8
    app.control.rate_limit(name, "2/s")
    try:
        runs = group(api.rate_changed.s() for _ in range(3)).apply_async().get(timeout=20)
    finally:
        app.control.rate_limit(name, None)
    starts = sorted(started for started, _ in runs)
    assert_spaced(starts, 0.5)


def test_bad_rate_limit_at_runtime_is_a_clear_error(shared):
    with pytest.raises(zq.PublishError, match="invalid rate limit '5/fortnight'"):
        app.control.rate_limit(api.rate_changed.name, "5/fortnight")


def test_bad_rate_limit_task_option_is_a_clear_error(shared):
    with pytest.raises(zq.PublishError, match="invalid rate limit '5 per fortnight'"):
        api.bad_rate.delay().accepted(10)


# -- expiry ------------------------------------------------------------------------------


def test_expires_in_seconds_revokes_a_task_that_could_not_start_in_time(shared, tmp_path):
    marker = tmp_path / "ran"
    result = api.touch.apply_async((str(marker),), countdown=0.5, expires=0.2)
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    assert not marker.exists()


def test_expires_as_datetime_revokes_a_task_that_could_not_start_in_time(shared, tmp_path):
    marker = tmp_path / "ran"
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.2)
    result = api.touch.apply_async((str(marker),), countdown=0.5, expires=expires)
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    assert not marker.exists()


def test_task_expiring_while_queued_behind_a_busy_worker_never_runs(shared, tmp_path, gate):
    marker = tmp_path / "ran"
    start_hold("solo", tmp_path, gate)
    result = api.touch.apply_async((str(marker),), queue="solo", expires=0.3)
    time.sleep(0.4)  # let it expire while it waits
    gate.touch()
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    assert not marker.exists()


# -- routing -----------------------------------------------------------------------------


@pytest.mark.parametrize("routing_key, queue", [
    ("video", "video"), ("video.compress", "video"), ("video.hd.compress", "video"),
    ("image.png.resize", "image"),
])
def test_exchange_and_routing_key_route_through_topic_bindings(shared, tmp_path, gate,
                                                               routing_key, queue):
    start_hold("video", tmp_path, gate)
    result = api.where.apply_async(exchange="media", routing_key=routing_key)
    wait_until(lambda: shared.cluster.stats()["queued"].get(queue) == 1, 5,
               f"the task to wait in the {queue} queue")
    gate.touch()
    assert result.get(timeout=10)["pid"] in shared.pids("media")


@pytest.mark.parametrize("task, queue", [
    (api.compress_video, "video"),  # task_routes by exact name
    (api.resize_image, "image"),  # task_routes by glob
    (api.crop_image, "image"),  # task_routes by glob
    (api.cut_clip, "video"),  # task_routes by a function
], ids=["by_name", "by_glob", "by_glob_again", "by_function"])
def test_task_routes(shared, task, queue):
    info = task.delay().get(timeout=10)
    assert info["queue"] == queue
    assert info["pid"] in shared.pids("media")


def test_queue_per_call(shared):
    info = api.where.apply_async(queue="image").get(timeout=10)
    assert info["queue"] == "image"
    assert info["pid"] in shared.pids("media")


def test_worker_with_queues_consumes_only_those(shared):
    runs = group(api.stamp.s(0.05) for _ in range(8)).apply_async().get(timeout=10)
    pids = {pid for _, pid in runs}
    assert pids <= shared.pids("a") | shared.pids("b")


def test_queue_tasks_wait_until_a_worker_consumes_it(shared):
    result = api.tidy_up.delay()
    wait_until(lambda: shared.cluster.stats()["queued"].get("lowpri") == 1, 5,
               "the task to wait in lowpri")
    wait_until(lambda: result.state == states.PENDING, 5, "the PENDING state")
    lowpri = shared.cluster.start_workers("-Q", "lowpri", concurrency=1)
    try:
        info = result.get(timeout=10)
        assert info["queue"] == "lowpri"
        assert info["pid"] in actor_pids(lowpri)
    finally:
        lowpri.stop()


def test_priority_zero_runs_first(shared, tmp_path, gate):
    start_hold("solo", tmp_path, gate)
    low = [api.stamp.apply_async(queue="solo", priority=9) for _ in range(3)]
    high = api.stamp.apply_async(queue="solo", priority=0)
    wait_until(lambda: shared.cluster.stats()["queued"].get("solo") == 4, 5,
               "four tasks waiting in solo")
    gate.touch()
    high_start = high.get(timeout=10)[0]
    low_starts = [r.get(timeout=10)[0] for r in low]
    assert high_start < min(low_starts)
    assert low_starts == sorted(low_starts)


def test_mandatory_raises_no_route_when_nothing_is_bound(shared):
    # Sent without waiting: the refusal comes with the confirmation (or at once, strict).
    with pytest.raises(zq.NoRoute):
        api.where.apply_async(exchange="media", routing_key="audio.mp3",
                              mandatory=True).accepted(10)
    with pytest.raises(zq.NoRoute) as refused_now:
        api.where.apply_async(exchange="media", routing_key="audio.mp3", mandatory=True,
                              confirm=True)
    assert refused_now.value.outcome == "refused"
    refused = api.where.apply_async(exchange="media", routing_key="audio.mp3",
                                    mandatory=True)
    with pytest.raises(zq.NoRoute):
        refused.get(timeout=10)


def test_a_chain_whose_first_link_is_refused_raises_from_the_last_link_s_get(shared):
    """Only the first link is sent; the others travel in its header. Its refusal is the
    whole chain's: get() on the last link raises it instead of waiting forever."""
    refused = (api.where.si().set(exchange="media", routing_key="audio.mp3", mandatory=True)
               | api.where.si()).apply_async()
    with pytest.raises(zq.NoRoute):
        refused.get(timeout=10)


def test_immediate_raises_when_no_worker_consumes_the_queue(shared):
    with pytest.raises(zq.NoRoute):
        api.where.apply_async(queue=f"nobody-{uuid.uuid4().hex[:8]}", immediate=True,
                              confirm=True)


def test_immediate_raises_when_the_consuming_worker_is_busy(shared, tmp_path, gate):
    start_hold("video", tmp_path, gate)
    with pytest.raises(zq.NoRoute):
        api.where.apply_async(queue="image", immediate=True).accepted(10)


def test_immediate_is_accepted_when_a_worker_can_take_it_now(shared):
    api.where.apply_async(queue="image").get(timeout=10)  # the media actor is idle now
    info = api.where.apply_async(queue="image", immediate=True).get(timeout=10)
    assert info["pid"] in shared.pids("media")


# -- fanout: one copy to every bound queue -------------------------------------------------


def copies_recorded(path: Path, count: int) -> list[dict]:
    wait_until(lambda: len(read_records(path)) >= count, 10, f"{count} runs recorded")
    time.sleep(0.2)  # nothing more arrives
    return read_records(path)


def test_fanout_exchange_runs_a_copy_in_every_bound_queue(shared, tmp_path):
    path = tmp_path / "copies"
    result = api.each_copy.apply_async((str(path),), exchange="broadcast")
    assert result.get(timeout=10) in {"solo", "video"}
    runs = copies_recorded(path, 2)
    assert sorted(r["queue"] for r in runs) == ["solo", "video"]
    assert {r["id"] for r in runs} == {result.id}
    by_queue = {r["queue"]: r["pid"] for r in runs}
    assert by_queue["solo"] in shared.pids("solo")
    assert by_queue["video"] in shared.pids("media")
    wait_until(lambda: shared.cluster.stats()["tasks"] == 0, 5, "both copies finished")


def test_fanout_ignores_the_routing_key(shared, tmp_path):
    path = tmp_path / "copies"
    api.each_copy.apply_async((str(path),), exchange="broadcast",
                              routing_key="anything.at.all").get(timeout=10)
    assert sorted(r["queue"] for r in copies_recorded(path, 2)) == ["solo", "video"]


def test_each_fanout_copy_retries_on_its_own_in_its_queue(shared, tmp_path):
    path = tmp_path / "copies"
    result = api.each_copy.apply_async((str(path), 2), exchange="broadcast")
    result.get(timeout=10)
    runs = copies_recorded(path, 6)
    for queue in ("solo", "video"):
        assert [r["retries"] for r in runs if r["queue"] == queue] == [0, 1, 2]
    wait_until(lambda: shared.cluster.stats()["tasks"] == 0, 5, "every attempt finished")


def test_the_first_copy_to_end_stands_whatever_its_siblings_do_later(shared, tmp_path):
    """The video copy succeeds at once; the solo copy retries, then fails: its later
    states must not replace the stored SUCCESS."""
    path = tmp_path / "copies"
    result = api.copy_outcome.apply_async((str(path), "solo"), exchange="broadcast")
    assert result.get(timeout=10) == "video"
    copies_recorded(path, 3)
    wait_until(lambda: shared.cluster.stats()["tasks"] == 0, 10, "every attempt finished")
    fresh = App(router=shared.cluster.router)  # asks the results actor, no cache
    try:
        stored = fresh.AsyncResult(result.id)
        assert (stored.state, stored.get(timeout=5)) == (states.SUCCESS, "video")
    finally:
        fresh.close()


def test_revoking_a_fanout_task_revokes_every_copy(shared, tmp_path):
    path = tmp_path / "copies"
    result = api.each_copy.apply_async((str(path),), exchange="broadcast", countdown=30)
    wait_until(lambda: shared.cluster.stats()["scheduled"] == 2, 5, "two scheduled copies")
    result.revoke()
    wait_until(lambda: shared.cluster.stats()["scheduled"] == 0, 5, "no copy scheduled")
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    flush_solo()
    assert read_records(path) == []


def test_mandatory_fanout_with_nothing_bound_raises_no_route(shared):
    with pytest.raises(zq.NoRoute):
        api.where.apply_async(exchange=f"nobody-{uuid.uuid4().hex[:8]}",
                              mandatory=True).accepted(10)


# -- app-wide defaults: time limits and routing, as Celery's settings -----------------------


@pytest.fixture(scope="module")
def defaults_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("defaults"), app=DEFAULTS, concurrency=2,
                 workers_args=["-Q", "default,feed_tasks"]) as cluster:
        try:
            yield cluster
        finally:
            defaults.app.close()


@pytest.fixture
def with_defaults(defaults_cluster: Cluster) -> Cluster:
    """Workers of ``tests.apps.defaults``: ``task_time_limit``, Celery's topic routing."""
    connect(defaults.app, defaults_cluster)
    return defaults_cluster


def test_app_wide_task_time_limit_kills_a_task_that_sets_none(with_defaults, tmp_path):
    pid_path = tmp_path / "pid"
    result = defaults.sleeper.delay(str(pid_path), 30)
    victim = read_pid(pid_path)
    assert_killed_and_replaced(with_defaults, result, victim, defaults.TIME_LIMIT_S)


def test_a_tasks_own_time_limit_beats_the_app_wide_one(with_defaults):
    assert defaults.patient.delay(1.5).get(timeout=10) == "done"


def test_task_default_exchange_and_routing_key_route_a_task_nothing_else_routes(
        with_defaults):
    assert defaults.where.delay().get(timeout=10) == {
        "queue": "default", "exchange": "tasks", "routing_key": "task.default",
        "time_limit": defaults.TIME_LIMIT_S}


def test_a_routing_key_alone_goes_through_task_default_exchange(with_defaults):
    info = defaults.where.apply_async(routing_key="feed.import").get(timeout=10)
    assert (info["queue"], info["exchange"], info["routing_key"]) == (
        "feed_tasks", "tasks", "feed.import")
