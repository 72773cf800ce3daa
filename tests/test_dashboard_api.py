"""``zq dashboard``'s HTTP API on a real cluster: each endpoint, auth, the control policy,
bad input answered 4xx with a JSON error, and the metrics text."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps import basic
from tests.dashboard_helpers import Dashboard, basic_cluster_with_dashboard, started_dashboard
from zq.testing import Cluster

AUTH = ("admin", "s3cret")


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Dashboard]]:
    with basic_cluster_with_dashboard(tmp_path_factory.mktemp("dash")) as started:
        yield started


@pytest.fixture(scope="module")
def cluster(both: tuple[Cluster, Dashboard]) -> Cluster:
    return both[0]


@pytest.fixture(scope="module")
def dash(both: tuple[Cluster, Dashboard]) -> Dashboard:
    return both[1]


def _final(dash: Dashboard, task_id: str, timeout_s: float = 15.0) -> dict:
    def ended() -> dict | None:
        answer = dash.call(f"/api/task/info/{task_id}")
        if answer.status == 200 and answer.json()["state"] in ("SUCCESS", "FAILURE", "REVOKED"):
            return answer.json()
        return None
    return dash.wait(ended, f"task {task_id} to end", timeout_s)


def _error(answer, status: int) -> str:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json")
    message = answer.json()["error"]
    assert isinstance(message, str) and message
    return message


def test_task_info_names_its_relatives_worker_runtime_and_queue(dash: Dashboard) -> None:
    """A chain's second link was sent by the first (parent_id, root_id); a group's members
    share its group_id; a finished task says which actor ran it and for how long."""
    from zq import group

    chained = (basic.add.s(1, 1) | basic.add.s(2)).delay()
    assert chained.get(timeout=10) == 4
    first = chained.parent
    assert first is not None
    info = _final(dash, chained.id)
    assert info["relatives"]["parent_id"] == first.id
    assert info["relatives"]["root_id"] == first.id
    assert info["worker"] and info["worker"].count("/") == 2
    assert info["runtime"] is not None and 0 <= info["runtime"] < 5
    assert info["queue"] == "celery"
    members = group(basic.add.s(i, i) for i in range(3)).delay()
    assert members.get(timeout=10) == [0, 2, 4]
    group_ids = {_final(dash, r.id)["relatives"].get("group_id") for r in members.results}
    assert group_ids == {members.id}


def test_tasks_info_and_result(dash: Dashboard) -> None:
    ok = basic.add.delay(2, 3)
    bad = basic.fail.delay("boom from the api test")
    assert ok.get(timeout=10) == 5
    info = _final(dash, ok.id)
    assert info["name"] == "tests.apps.basic.add" and info["result"] == 5
    assert [step["state"] for step in info["timeline"]][-1] == "SUCCESS"
    failed = _final(dash, bad.id)
    assert failed["state"] == "FAILURE"
    assert "ValueError: boom from the api test" in failed["traceback"]
    listed = dash.get("/api/tasks?limit=50")
    assert ok.id in listed and bad.id in listed
    assert listed[ok.id]["uuid"] == ok.id
    only_failed = dash.get("/api/tasks?state=FAILURE&format=list")
    assert bad.id in {t["id"] for t in only_failed["tasks"]}
    assert ok.id not in {t["id"] for t in only_failed["tasks"]}
    by_name = dash.get("/api/tasks?taskname=tests.apps.basic.add&format=list")
    assert all(t["name"] == "tests.apps.basic.add" for t in by_name["tasks"])
    found = dash.get("/api/tasks?search=boom+from+the+api&format=list")
    assert [t["id"] for t in found["tasks"]] == [bad.id]
    future = dash.get(f"/api/tasks?received_start={time.time() + 3600}&format=list")
    assert future["total"] == 0
    result = dash.get(f"/api/task/result/{ok.id}")
    assert result == {"task-id": ok.id, "state": "SUCCESS", "result": 5}


def test_task_lookups_refuse_bad_and_unknown_ids(dash: Dashboard) -> None:
    assert "unknown task" in _error(dash.call(f"/api/task/info/{uuid.uuid4()}"), 404)
    assert "not a task id" in _error(dash.call("/api/task/info/bad%20id"), 400)
    assert "not a task id" in _error(dash.call("/api/task/info/" + "x" * 300), 400)
    assert "not a state" in _error(dash.call("/api/tasks?state=lower"), 400)
    assert "limit" in _error(dash.call("/api/tasks?limit=0"), 400)
    assert "received_start" in _error(dash.call("/api/tasks?received_start=yesterday"), 400)


def test_async_apply_runs_the_task(dash: Dashboard) -> None:
    sent = dash.post("/api/task/async-apply/tests.apps.basic.add",
                     {"args": [20, 22], "kwargs": {}})
    assert sent["state"] == "PENDING"
    info = _final(dash, sent["task-id"])
    assert info["state"] == "SUCCESS" and info["result"] == 42
    assert info["args"] == [20, 22]


@pytest.mark.parametrize(("body", "words"), [
    ({"args": {"x": 1}}, "args must be a JSON list"),
    ({"kwargs": [1]}, "kwargs must be a JSON object"),
    ({"countdown": -1}, "countdown"),
    ({"countdown": "soon"}, "countdown"),
    ({"priority": 99}, "priority"),
    ({"queue": "no spaces allowed"}, "not a queue name"),
    ({"bogus": 1}, "unknown options: bogus"),
    ([1, 2], "must be a JSON object"),
])
def test_async_apply_refuses_bad_input(dash: Dashboard, body: object, words: str) -> None:
    answer = dash.call("/api/task/async-apply/tests.apps.basic.add", "POST", body)
    assert words in _error(answer, 400)


def test_async_apply_refuses_bad_names_and_bodies(dash: Dashboard) -> None:
    assert "not a task name" in _error(
        dash.call("/api/task/async-apply/1bad%20name", "POST", {}), 400)
    assert "not JSON" in _error(dash.call("/api/task/async-apply/tests.apps.basic.add", "POST",
                                          raw=b"{nope", headers={"Content-Type": "text/json"}),
                                400)
    big = b'{"args": ["' + b"x" * (1024 * 1024 + 10) + b'"]}'
    assert "larger" in _error(dash.call("/api/task/async-apply/tests.apps.basic.add", "POST",
                                        raw=big), 413)


def test_revoke_a_scheduled_task(dash: Dashboard) -> None:
    sent = dash.post("/api/task/async-apply/tests.apps.basic.add",
                     {"args": [1, 1], "countdown": 60})
    task_id = sent["task-id"]
    info = dash.wait(lambda: (i := dash.get(f"/api/task/info/{task_id}"))["held"] and i,
                     "the router to hold the task")
    assert info["held"][0]["state"] == "scheduled"
    assert "Revoked" in dash.post(f"/api/task/revoke/{task_id}", {"terminate": False})["message"]
    assert _final(dash, task_id)["state"] == "REVOKED"
    assert "not a signal" in _error(dash.call(f"/api/task/revoke/{task_id}", "POST",
                                              {"terminate": True, "signal": "SIGNOPE"}), 400)
    assert "terminate" in _error(dash.call(f"/api/task/revoke/{task_id}", "POST",
                                           {"terminate": "maybe"}), 400)
    assert _error(dash.call("/api/task/revoke/..", "POST"), 400)


def test_workers_hosts_and_the_pool(dash: Dashboard, cluster: Cluster) -> None:
    workers = dash.get("/api/workers")
    assert len(workers) == 2
    name, actor = next(iter(workers.items()))
    assert actor["pid"] and actor["queues"] == ["celery"]
    assert dash.get("/api/workers?status=1") == {n: True for n in workers}
    host = actor["host"]
    hosts = dash.get("/api/hosts")
    assert [h["name"] for h in hosts["hosts"]] == [host]
    assert "tests.apps.basic.add" in hosts["registered"]
    assert "n must be between" in _error(dash.call(f"/api/worker/pool/grow/{host}", "POST",
                                                   {"n": 0}), 400)
    assert "whole number" in _error(dash.call(f"/api/worker/pool/grow/{host}", "POST",
                                              {"n": "two"}), 400)
    assert "no worker named" in _error(dash.call("/api/worker/pool/grow/nohost", "POST"), 404)
    dash.post(f"/api/worker/pool/grow/{host}", {"n": 1})
    cluster.wait_for(lambda s: s["actors"] == 3, "a third actor", timeout_s=20)
    dash.wait(lambda: len(dash.get("/api/workers")) == 3, "the dashboard to see 3 actors")
    dash.post(f"/api/worker/pool/shrink/{host}", {"n": 1})
    cluster.wait_for(lambda s: s["actors"] == 2, "back to two actors", timeout_s=20)
    assert "min" in _error(dash.call(f"/api/worker/pool/autoscale/{host}", "POST",
                                     {"max": 2, "min": 5}), 400)


def test_consumers_queues_and_purge(dash: Dashboard, cluster: Cluster) -> None:
    host = dash.get("/api/hosts")["hosts"][0]["name"]
    assert "not a queue name" in _error(dash.call(
        f"/api/worker/queue/add-consumer/{host}", "POST", {"queue": "a b"}), 400)
    dash.post(f"/api/worker/queue/add-consumer/{host}", {"queue": "dashq"})
    dash.wait(lambda: all("dashq" in a["queues"] for a in dash.get("/api/workers").values()),
              "the actors to consume dashq")
    dash.post(f"/api/worker/queue/cancel-consumer/{host}", {"queue": "dashq"})
    dash.wait(lambda: all("dashq" not in a["queues"] for a in dash.get("/api/workers").values()),
              "the actors to stop consuming dashq")
    parked = basic.add.apply_async((1, 2), queue="nobody-dash")
    dash.wait(lambda: any(q["name"] == "nobody-dash" and q["messages"] == 1
                          for q in dash.get("/api/queues/length")["active_queues"]),
              "the queue's depth")
    waiting = dash.get("/api/queues/waiting/nobody-dash?n=5")
    assert [t["id"] for t in waiting["tasks"]] == [parked.id]
    assert any(q["name"] == "nobody-dash" for q in dash.get("/api/queues")["queues"])
    assert "confirm=true" in _error(dash.call("/api/queues/purge/nobody-dash", "POST"), 400)
    assert dash.post("/api/queues/purge/nobody-dash", {"confirm": True})["purged"] == 1
    assert _final(dash, parked.id)["state"] == "REVOKED"
    assert "not a queue name" in _error(dash.call("/api/queues/waiting/a%20b"), 400)
    assert "n must be" in _error(dash.call("/api/queues/waiting/celery?n=100000"), 400)


def test_rate_and_time_limits(dash: Dashboard) -> None:
    path = "/api/task/rate-limit/tests.apps.basic.echo"
    assert "not a rate limit" in _error(dash.call(path, "POST", {"ratelimit": "fast"}), 400)
    assert "rate limit" in dash.post(path, {"ratelimit": "100/s"})["message"]
    dash.post(path, {"ratelimit": "0"})
    path = "/api/task/timeout/tests.apps.basic.echo"
    assert "soft limit" in _error(dash.call(path, "POST", {"soft": 5, "hard": 1}), 400)
    assert "seconds" in _error(dash.call(path, "POST", {"soft": "nan"}), 400)
    assert dash.post(path, {"soft": 30, "hard": 60})["replies"]
    dash.post(path, {"soft": "", "hard": ""})


def test_overview_events_and_metrics(dash: Dashboard) -> None:
    basic.add.delay(4, 4).get(timeout=10)
    overview = dash.get("/api/overview")
    assert overview["summary"]["workers_up"] == 2 and overview["control_allowed"] is True
    assert len(overview["series"]["per_minute"]) == 60
    with urllib.request.urlopen(dash.url + "api/events", timeout=5) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        while True:
            line = stream.readline().decode()
            if line.startswith("data: "):
                assert '"summary"' in line
                break
    dash.wait(lambda: 'zq_results_up 1.0' in dash.call("/metrics").body.decode(),
              "the results actor to be seen up")
    text = dash.call("/metrics").body.decode()
    for series in ('zq_events_total{state="SUCCESS",task="tests.apps.basic.add"}',
                   'zq_task_runtime_seconds_bucket{le="0.001",task="tests.apps.basic.add"}',
                   'zq_queue_depth{queue="celery"}', "zq_workers_up 2.0", "zq_router_up 1.0",
                   "zq_router_journal_ok 1.0", "zq_worker_online{worker="):
        assert series in text, series
    assert dash.get("/healthz") == {"router_up": True, "results_up": True}


def test_pages_are_served(dash: Dashboard) -> None:
    for path in ("/", "/tasks", "/workers", "/queues", f"/task/{uuid.uuid4()}"):
        answer = dash.call(path)
        assert answer.status == 200 and b'<main id="main">' in answer.body
    assert b'data-control="1"' in dash.call("/").body
    assert dash.call("/task/%3Cscript%3E").body.count(b"<script") == 1  # escaped
    assert dash.call("/static/app.js").status == 200


def test_a_cross_site_request_is_refused(dash: Dashboard) -> None:
    answer = dash.call(f"/api/task/revoke/{uuid.uuid4()}", "POST",
                       headers={"Origin": "http://evil.example"})
    assert "another site" in _error(answer, 403)


def test_basic_auth_and_a_late_start(cluster: Cluster) -> None:
    early = basic.add.apply_async((5, 5), countdown=120)
    with started_dashboard(cluster, auth=AUTH, workers=2) as dash:
        assert "authentication" in _error(dash.call("/api/workers", auth=False), 401)
        assert _error(dash.call("/api/workers", auth=("admin", "wrong")), 401)
        assert _error(dash.call("/", auth=False), 401)
        assert _error(dash.call("/metrics", auth=False), 401)
        assert dash.call("/api/workers").status == 200
        # Started after the task was sent: the snapshot brought it.
        assert dash.get(f"/api/task/info/{early.id}")["state"] == "SENT"
        dash.post(f"/api/task/revoke/{early.id}")
        assert _final(dash, early.id)["state"] == "REVOKED"


def test_control_is_refused_beyond_localhost_without_auth(cluster: Cluster) -> None:
    with started_dashboard(cluster, bind="0.0.0.0:0") as dash:
        assert dash.call("/api/workers").status == 200
        task_id = str(uuid.uuid4())
        for path in (f"/api/task/revoke/{task_id}", "/api/task/async-apply/tests.apps.basic.add",
                     "/api/queues/purge/celery"):
            assert "control actions are off" in _error(dash.call(path, "POST", {}), 403)
        assert b'data-control="0"' in dash.call("/").body
    with started_dashboard(cluster, bind="0.0.0.0:0", auth=AUTH) as dash:
        assert dash.post(f"/api/task/revoke/{task_id}")["message"]


@pytest.mark.parametrize(("args", "words"), [
    (["--bind", "nowhere"], "--bind"),
    (["--basic-auth", "nopassword"], "--basic-auth"),
])
def test_cli_refuses_bad_options(tmp_path: Path, args: list[str], words: str) -> None:
    done = subprocess.run([sys.executable, "-m", "zq", "dashboard", "--router",
                           f"ipc://{tmp_path}/r.sock", *args], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
