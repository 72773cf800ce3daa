"""Every ``zq`` command fails with one line on stderr and a non-zero exit (issue 12).

Each test runs the real command (``python -m zq``) as a subprocess, on ports picked free
by the OS or ipc:// paths under ``tmp_path``, and stops every process it starts by PID.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASIC = "tests.apps.basic"
# Far above what a refusal takes (about a second and a half); only a hang fails it.
PROMPTLY_S = 8.0


def zq_env(**extra: str) -> dict[str, str]:
    """The environment of a ``zq`` subprocess: this checkout's zq, no $ZQ_ROUTER."""
    env = {k: v for k, v in os.environ.items() if k != "ZQ_ROUTER"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def zq(*args: str, env: dict[str, str] | None = None, timeout_s: float = 30,
       **options) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zq", *args], cwd=REPO,
                          env=env or zq_env(), capture_output=True, text=True,
                          timeout=timeout_s, **options)


def one_line(done: subprocess.CompletedProcess[str], status: int, command: str) -> str:
    """The one line a failed command printed, checked to be that and only that."""
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and "Aborted" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"zq {command}: "), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ipc_path(directory: Path, size: int) -> str:
    """A path under ``directory`` of exactly ``size`` bytes."""
    base = f"{directory}/"
    assert len(base) < size - 1, "tmp_path is too long for this test"
    return base + "r" * (size - len(base))


# -- 1. one handler: one line and a status, for every command ------------------------------


def test_an_os_error_is_one_line_naming_the_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line(zq("keys", "generate", str(blocker / "keys")), 1, "keys generate")
    assert line == f"zq keys generate: Not a directory: {blocker / 'keys'}"


def test_a_failed_task_is_one_line(cluster):
    done = zq("call", f"{BASIC}.fail", "--args", '["bad"]', "--wait", "--timeout", "20",
              "--router", cluster.router)
    line = one_line(done, 1, "call")
    assert line.endswith("failed: ValueError: bad")


def test_usage_errors_keep_clicks_usage_and_status_2():
    done = zq("call")
    assert done.returncode == 2
    assert "Usage:" in done.stderr and "Missing argument 'NAME'" in done.stderr
