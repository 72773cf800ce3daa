"""``zq inspect`` and ``zq control`` against real clusters: each operation's effect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps import basic
from tests.apps.basic import add, getpid, mark, wait_for_file
from tests.conftest import BASIC_APP, connect, dedicated_cluster, wait_until
from zq import errors, states
from zq.testing import Cluster

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parent.parent
ADD = "tests.apps.basic.add"


def zq(cluster: Cluster, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zq", *args, "--router", cluster.router],
                          cwd=REPO, env=cluster.env, capture_output=True, text=True,
                          timeout=30, input=input)


def zq_json(cluster: Cluster, *args: str) -> object:
    done = zq(cluster, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two actors that each hold two tasks (one running, one reserved)."""
    with Cluster(tmp_path_factory.mktemp("ops"), app=BASIC_APP, concurrency=2,
                 workers_args=["--prefetch", "2"]) as started:
        connect(basic.app, started)
        try:
            yield started
        finally:
            basic.app.close()


def actor_pids(cluster: Cluster) -> dict[str, int]:
    stats = basic.app.control.inspect().stats() or {}
    return {name: s["pid"] for name, s in stats.items() if name != "router"}


# -- inspect --------------------------------------------------------------------------------

def test_registered_ping_active_queues_conf_and_stats(ops):
    assert [add.delay(i, 1).get(timeout=10) for i in range(4)] == [1, 2, 3, 4]
    inspect = basic.app.control.inspect()
    registered = inspect.registered()
    assert len(registered) == 2 and all(ADD in names for names in registered.values())
    assert set(inspect.ping()) == set(registered)
    assert all(q[0]["name"] == "celery" for q in inspect.active_queues().values())
    # The hosts' facts come with their supervisors' heartbeats (every second).
    conf = wait_until(lambda: all(inspect.conf().values()) and inspect.conf(), 10, "conf")
    assert len(conf) == 1 and next(iter(conf.values()))["prefetch"] == 2
    stats = wait_until(lambda: _counted(inspect.stats()), 10, "processed counts in stats")
    workers = {k: v for k, v in stats.items() if k != "router"}
    assert sum(s["total"].get(ADD, 0) for s in workers.values()) >= 4
    for name, s in workers.items():
        assert s["pool"]["max-concurrency"] == 2 and s["prefetch_count"] == 2
        assert s["pid"] in s["pool"]["processes"] and s["uptime"] > 0
        assert {"utime", "stime", "maxrss"} <= s["rusage"].keys()
    assert stats["router"]["actors"] == 2
    one = next(iter(workers))
    assert list(basic.app.control.inspect([one]).registered()) == [one]


def _counted(stats):
    return stats if stats and sum(s.get("total", {}).get(ADD, 0) for k, s in stats.items()
                                  if k != "router") >= 4 else None


def test_active_reserved_query_task_queued_and_task(ops, gate):
    results = [wait_for_file.delay(str(gate)) for _ in range(5)]
    ids = [r.id for r in results]
    inspect = basic.app.control.inspect()
    wait_until(lambda: sum(map(len, (inspect.reserved() or {}).values())) == 2, 10,
               "two reserved tasks")
    active = wait_until(lambda: _started(inspect.active()), 10, "time_start of active tasks")
    running = [r for held in active.values() for r in held]
    assert len(running) == 2 and {r["id"] for r in running} <= set(ids[:4])
    request = running[0]
    assert request["name"] == "tests.apps.basic.wait_for_file"
    assert request["args"] == [str(gate)] and request["acknowledged"] is True
    assert request["delivery_info"]["routing_key"] == "celery"
    assert request["worker_pid"] in actor_pids(ops).values()
    found = inspect.query_task(request["id"])
    assert [v[request["id"]][0] for v in found.values() if v] == ["active"]
    waiting = basic.app.control.inspect().queued("celery")
    assert [t["id"] for t in waiting["tasks"]] == [ids[4]] and waiting["size"] == 1
    assert waiting["tasks"][0]["age_s"] >= 0
    where = zq_json(ops, "inspect", "task", ids[4])
    assert where["where"][0]["state"] == "queued" and where["where"][0]["queue"] == "celery"
    here = zq_json(ops, "inspect", "task", request["id"])["where"][0]
    assert here["state"] == "active" and here["since"] == request["time_start"]
    gate.touch()
    assert [r.get(timeout=20) for r in results] == ["released"] * 5
    finished = zq_json(ops, "inspect", "task", ids[0])
    assert finished["where"] == [] and finished["state"] == states.SUCCESS


def _started(active):
    held = [r for rs in (active or {}).values() for r in rs]
    return active if len(held) == 2 and all(r["time_start"] for r in held) else None


def test_scheduled_and_revoked(ops):
    later = add.apply_async((1, 2), countdown=60)
    scheduled = basic.app.control.inspect().scheduled()["router"]
    assert [s["request"]["id"] for s in scheduled] == [later.id]
    assert scheduled[0]["eta_ts"] > 0
    done = zq(ops, "control", "revoke", later.id)
    assert done.returncode == 0, done.stderr
    assert later.id in zq_json(ops, "inspect", "revoked")["router"]
    with pytest.raises(errors.TaskRevokedError):
        later.get(timeout=10)
    assert basic.app.control.inspect().scheduled() == {"router": []}


def test_cli_destination_that_matches_nobody_is_one_line_and_status_1(ops):
    done = zq(ops, "inspect", "active", "-d", "nobody/0/0")
    assert done.returncode == 1 and done.stderr.strip() == "zq inspect active: no worker matches"


# -- control --------------------------------------------------------------------------------

def test_time_limit_set_by_control_fails_a_task_past_it_and_can_be_lifted(ops):
    name = "tests.apps.basic.getpid"
    replies = zq_json(ops, "control", "time_limit", name, "0.5", "1")
    assert len(replies) == 2
    with pytest.raises(errors.SoftTimeLimitExceeded):
        getpid.delay(3).get(timeout=20)
    basic.app.control.time_limit(name, soft=None, hard=1)
    slow = getpid.delay(4)
    with pytest.raises(errors.TimeLimitExceeded):
        slow.get(timeout=20)
    basic.app.control.time_limit(name, None, None)
    wait_until(lambda: len(actor_pids(ops)) == 2, 20, "the killed actor replaced")
    assert getpid.delay(1.5).get(timeout=20) in actor_pids(ops).values()


def test_terminate_kills_the_running_task_and_it_ends_revoked(ops, gate):
    running = wait_for_file.delay(str(gate))
    wait_until(lambda: any(r["id"] == running.id for rs in
                           (basic.app.control.inspect().active() or {}).values() for r in rs),
               10, "the task to run")
    done = zq(ops, "control", "terminate", running.id, "-s", "SIGKILL")
    assert done.returncode == 0, done.stderr
    with pytest.raises(errors.TaskRevokedError):
        running.get(timeout=20)
    wait_until(lambda: len(actor_pids(ops)) == 2, 20, "the killed actor replaced")


def test_rate_limit_spaces_the_starts(ops):
    assert zq(ops, "control", "rate_limit", "tests.apps.basic.now", "2/s").returncode == 0
    try:
        times = sorted(basic.now.delay().get(timeout=20) for _ in range(1)) + sorted(
            r.get(timeout=20) for r in [basic.now.delay() for _ in range(3)])
    finally:
        basic.app.control.rate_limit("tests.apps.basic.now", None)
    assert times[-1] - times[0] >= 1.0  # four starts at 2/s span at least 1.5 s


def test_pool_grow_shrink_and_autoscale(tmp_path, gate):
    with dedicated_cluster(tmp_path / "c", concurrency=1) as cluster:
        replies = basic.app.control.pool_grow(2)
        assert len(replies) == 1
        cluster.wait_for(lambda s: s["actors"] == 3, "3 actors")
        results = [getpid.delay(1.0) for _ in range(6)]
        assert len({r.get(timeout=20) for r in results}) == 3
        busy = wait_for_file.delay(str(gate))
        wait_until(lambda: any((basic.app.control.inspect().active() or {}).values()), 10,
                   "a running task")
        assert zq(cluster, "control", "pool_shrink", "2").returncode == 0
        cluster.wait_for(lambda s: s["actors"] == 1, "1 actor")
        gate.touch()
        assert busy.get(timeout=20) == "released"  # shrinking killed no running task
        assert zq(cluster, "control", "autoscale", "3,2").returncode == 0
        cluster.wait_for(lambda s: s["actors"] == 2, "2 actors (autoscale min)")
        gate.unlink()
        held = [wait_for_file.delay(str(gate)) for _ in range(3)]
        cluster.wait_for(lambda s: s["actors"] == 3, "3 actors (all were busy)")
        gate.touch()
        assert [r.get(timeout=20) for r in held] == ["released"] * 3


def test_cancel_and_add_consumer_each_task_runs_once(tmp_path):
    log = tmp_path / "marks"
    with dedicated_cluster(tmp_path / "c", concurrency=2) as cluster:
        assert len(basic.app.control.add_consumer("extra")) == 2
        assert mark.apply_async(("first", str(log)), queue="extra").get(timeout=10) == "first"
        assert zq(cluster, "control", "cancel_consumer", "extra").returncode == 0
        wait_until(lambda: all(q == ["celery"] for q in _queues().values()), 10,
                   "actors announcing their queues")
        sent = [mark.apply_async((i, str(log)), queue="extra") for i in range(5)]
        assert add.delay(1, 1).get(timeout=10) == 2  # the actors still take from celery
        wait_until(lambda: basic.app.control.inspect().queued("extra")["size"] == 5, 5,
                   "five tasks waiting in extra")
        assert not any(r.ready() for r in sent)
        basic.app.control.add_consumer("extra")
        assert [r.get(timeout=20) for r in sent] == list(range(5))
    lines = log.read_text().splitlines()
    assert sorted(lines) == sorted(["'first'", *map(str, range(5))])


def _queues():
    return {name: [q["name"] for q in queues]
            for name, queues in (basic.app.control.inspect().active_queues() or {}).items()}


def test_shutdown_a_host_its_prefetched_tasks_run_elsewhere(tmp_path, gate):
    """Warm: the running task finishes; the prefetched ones, never started, go back once
    the actor stops (it cannot speak while its task runs) and run on the other host."""
    with dedicated_cluster(tmp_path / "c", concurrency=1,
                           workers_args=["--prefetch", "3"]) as cluster:
        first = cluster.workers[0]
        running = wait_for_file.delay(str(gate))
        reserved = [getpid.delay() for _ in range(2)]
        wait_until(lambda: sum(map(len, (basic.app.control.inspect().reserved() or {})
                                   .values())) == 2, 10, "two reserved on the first host")
        (host,) = cluster.stats()["hosts"]
        old_pids = set(actor_pids(cluster).values())
        cluster.start_workers("--prefetch", "1", concurrency=2)
        assert zq(cluster, "control", "shutdown", "-d", host).returncode == 0
        assert first.alive()
        gate.touch()
        assert running.get(timeout=20) == "released"
        pids = {r.get(timeout=20) for r in reserved}
        assert pids and not pids & old_pids
        assert first.popen.wait(20) == 0
        cluster.wait_for(lambda s: host not in s["hosts"], "the host to leave")


def test_purge_asks_without_force_and_purged_tasks_end_revoked(tmp_path):
    with dedicated_cluster(tmp_path / "c", start_workers=False) as cluster:
        results = [add.delay(i, i) for i in range(3)]
        wait_until(lambda: (cluster.stats() or {}).get("queued", {}).get("celery") == 3, 10,
                   "three queued")
        kept = zq(cluster, "purge", input="n\n")
        assert kept.returncode == 1 and "Drop the 3 task(s)" in kept.stdout
        assert "zq purge: nothing purged" in kept.stderr
        done = zq(cluster, "purge", "-Q", "celery", "-f")
        assert done.returncode == 0 and done.stdout.strip() == "purged 3 task(s)"
        for result in results:
            with pytest.raises(errors.TaskRevokedError):
                result.get(timeout=10)
            assert result.state == states.REVOKED
    assert os.path.exists(tmp_path / "c")


def test_workers_autoscale_flag_starts_within_bounds_grows_when_busy_and_shrinks_when_idle(
        tmp_path, gate):
    """`zq workers -c 1 --autoscale 3,2`: starts at the minimum, grows to 3 while every
    actor is busy, and after ten heartbeats with an idle actor to spare comes back to 2;
    `inspect conf` shows the bounds."""
    with dedicated_cluster(tmp_path / "c", concurrency=1,
                           workers_args=["--autoscale", "3,2", "--heartbeat-interval", "0.3"]
                           ) as cluster:
        cluster.wait_for(lambda s: s["actors"] == 2, "2 actors (the minimum)")
        # The hosts' settings come with their heartbeats, once a second.
        conf = wait_until(lambda: [host.get("autoscale") for host in
                                   zq_json(cluster, "inspect", "conf").values()
                                   if host.get("autoscale")], 10, "the host's conf")
        assert conf == [[3, 2]]
        held = [wait_for_file.delay(str(gate)) for _ in range(3)]
        cluster.wait_for(lambda s: s["actors"] == 3, "3 actors (all were busy)")
        gate.touch()
        assert [r.get(timeout=20) for r in held] == ["released"] * 3
        cluster.wait_for(lambda s: s["actors"] == 2, "2 actors again (idle)", timeout_s=30)
        assert add.delay(2, 2).get(timeout=10) == 4


def test_workers_autoscale_flag_refuses_bounds_that_do_not_make_sense(tmp_path):
    for bounds in ("2,3", "0,0", "x"):
        done = subprocess.run([sys.executable, "-m", "zq", "workers", "-A", BASIC_APP,
                               "--autoscale", bounds, "--router", f"ipc://{tmp_path}/r"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (bounds, done.stderr)
        assert "autoscale" in done.stderr and "Traceback" not in done.stderr
