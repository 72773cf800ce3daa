"""The ``zq`` command line against a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.apps.basic import add, wait_for_file
from zq.testing import Process

REPO = Path(__file__).resolve().parent.parent


def zq_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "zq", *args]


def run_zq(cluster, *args: str, timeout_s: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(zq_command(*args, "--router", cluster.router), cwd=REPO,
                          env=cluster.env, capture_output=True, text=True, timeout=timeout_s)


def test_call_wait_prints_the_result(cluster):
    done = run_zq(cluster, "call", "tests.apps.basic.add", "--args", "[2, 3]", "--wait",
                  "--timeout", "10")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"


def test_call_with_kwargs(cluster):
    done = run_zq(cluster, "call", "tests.apps.basic.add", "--args", "[1]",
                  "--kwargs", '{"y": 9}', "--wait", "--timeout", "10")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10"


def test_call_takes_the_router_from_zq_router(cluster):
    env = {**cluster.env, "ZQ_ROUTER": cluster.router}
    done = subprocess.run(zq_command("call", "tests.apps.basic.add", "--args", "[3, 4]",
                                     "--wait", "--timeout", "10"),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "7"


def test_call_with_an_app_given_as_module_colon_attr(cluster):
    done = run_zq(cluster, "call", "-A", "tests.apps.basic:app", "tests.apps.basic.add",
                  "--args", "[5, 6]", "--wait", "--timeout", "10")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "11"


def test_workers_take_an_app_given_as_module_colon_attr(cluster, tmp_path):
    queue = "colon-attr"
    workers = Process("workers", ["workers", "-A", "tests.apps.basic:app", "-n", "1",
                                  "-Q", queue, "--router", cluster.router],
                      tmp_path / "workers.log", cluster.env, REPO)
    try:
        assert add.apply_async((1, 1), queue=queue).get(timeout=20) == 2
    finally:
        workers.stop()


def test_call_prints_an_id_that_result_resolves(cluster):
    called = run_zq(cluster, "call", "tests.apps.basic.add", "--args", "[20, 22]")
    assert called.returncode == 0, called.stderr
    task_id = called.stdout.strip()
    assert task_id
    resolved = run_zq(cluster, "result", task_id, "--wait", "--timeout", "10")
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout) == {"id": task_id, "state": "SUCCESS", "result": 42}


def test_result_of_a_failed_task_shows_the_error_and_traceback(cluster):
    called = run_zq(cluster, "call", "tests.apps.basic.fail", "--args", '["bad"]')
    resolved = run_zq(cluster, "result", called.stdout.strip(), "--wait", "--timeout", "10")
    out = json.loads(resolved.stdout)
    assert out["state"] == "FAILURE"
    assert out["result"] == "ValueError: bad"
    assert "ValueError: bad" in out["traceback"]


def test_call_wait_of_a_failing_task_reports_the_error_cleanly(cluster):
    """The task's own error (and its remote traceback, if shown), not the client's stack."""
    done = run_zq(cluster, "call", "tests.apps.basic.fail", "--args", '["bad"]', "--wait",
                  "--timeout", "10")
    assert done.returncode != 0
    assert "ValueError: bad" in done.stderr
    assert "zq/cli.py" not in done.stderr and "click/core.py" not in done.stderr


def test_call_wait_of_an_unknown_task_says_no_worker_has_it(cluster):
    """No worker has the task: it waits, parked (not failed on the wrong worker), and
    the caller is told why it does not run."""
    done = run_zq(cluster, "call", "no.such.task", "--wait", "--timeout", "3")
    assert done.returncode != 0
    assert "has task 'no.such.task'" in done.stderr
    assert "Traceback" not in done.stderr
    task_id = done.stderr.split("task ", 1)[1].split(":", 1)[0]
    assert run_zq(cluster, "control", "revoke", task_id).returncode == 0


def test_result_wait_timeout_is_a_clean_error(cluster):
    done = run_zq(cluster, "result", "never-sent", "--wait", "--timeout", "0.5")
    assert done.returncode != 0
    assert "TimeoutError" in done.stderr
    assert "Traceback" not in done.stderr


def test_result_of_an_unknown_id_is_pending(cluster):
    done = run_zq(cluster, "result", "never-sent")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": "never-sent", "state": "PENDING", "result": None}


def test_watch_prints_state_changes_as_json_lines(cluster, gate):
    waiting = wait_for_file.delay(str(gate))
    with subprocess.Popen(zq_command("watch", "--json", "--timeout", "3",
                                     "--router", cluster.router),
                          cwd=REPO, env=cluster.env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as watcher:
        try:
            first = json.loads(watcher.stdout.readline())
            result = add.delay(1, 2)
            assert result.get(timeout=10) == 3
            rest, errors = watcher.communicate(timeout=15)
        finally:
            watcher.kill()
    assert watcher.returncode == 0, errors
    events = [first] + [json.loads(line) for line in rest.splitlines()]
    assert first["id"] == waiting.id
    states_of_result = [e["state"] for e in events if e["id"] == result.id]
    assert states_of_result == ["SENT", "SUCCESS"]
    success = next(e for e in events if e["id"] == result.id and e["state"] == "SUCCESS")
    assert success["info"] == 3
    assert all({"seq", "id", "state"} <= e.keys() for e in events[1:])


def test_inspect_stats(cluster):
    done = run_zq(cluster, "inspect", "stats")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["router"]["actors"] == 2 and len(stats) == 3  # two actors, the router
    assert stats["router"]["hosts"] and all(isinstance(h, str)
                                            for h in stats["router"]["hosts"])


def test_bad_args_json_is_a_clean_error(cluster):
    done = run_zq(cluster, "call", "tests.apps.basic.add", "--args", "[2,")
    assert done.returncode != 0
    assert "--args is not JSON" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_args_that_are_not_a_list_is_a_clean_error(cluster):
    done = run_zq(cluster, "call", "tests.apps.basic.add", "--args", '{"x": 1}')
    assert done.returncode != 0
    assert "--args must be a JSON list" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_bad_kwargs_json_is_a_clean_error(cluster):
    done = run_zq(cluster, "call", "tests.apps.basic.add", "--kwargs", "{nope}")
    assert done.returncode != 0
    assert "--kwargs is not JSON" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_call_without_a_router_fails_cleanly(tmp_path):
    done = subprocess.run(
        zq_command("call", "anything", "--router", f"ipc://{tmp_path}/none.sock"),
        cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "PublishError" in done.stderr
    assert "Traceback" not in done.stderr


def test_version():
    done = subprocess.run(zq_command("--version"), capture_output=True, text=True, timeout=20)
    assert done.returncode == 0
    assert "0.1.0" in done.stdout
