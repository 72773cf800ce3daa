"""The scripts in examples/ run as a user would run them, from the repository root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, timeout_s: float = 25.0) -> str:
    """Run ``examples/<name>``; returns its output once it exited with 0."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_quickstart():
    out = run_example("quickstart.py")
    assert re.search(r"router at ipc://\S+, 2 actor processes", out)
    assert "add.delay(2, 3).get() -> 5" in out
    assert "mul.apply_async((6, 7)).get() -> 42" in out
    assert "(add.s(2, 2) | mul.s(10)) -> 40" in out
    assert "add.delay(1, 'x') raised on the client: TypeError(" in out
    assert "its state: FAILURE" in out
    assert re.search(r"watch \w+: SUCCESS", out)
    assert re.search(r"group of 2000 add tasks: all results back in [\d.]+s", out)


def test_retry_example():
    lines = run_example("retry.py").splitlines()
    assert lines[:2] == ["posted 'hello from zq'",
                         "fetched http://example.invalid after 3 retries"]
    assert len(lines) == 3
    assert re.fullmatch(r"hopeless gave up after 2 retries: ValueError\(still broken \([\d.]+\)\)",
                        lines[2])


def test_progress_example():
    lines = run_example("progress.py").splitlines()
    bars = [line for line in lines if line.startswith("[")]
    assert bars[-1] == "[##########] 10/10"
    assert [int(bar.split()[-1].split("/")[0]) for bar in bars] == sorted(
        int(bar.split()[-1].split("/")[0]) for bar in bars)
    assert lines[-2:] == ["SUCCESS", "crunched 10 chunks"]


def test_routing_example():
    lines = run_example("routing.py").splitlines()
    assert re.fullmatch(r"video cat\.mp4 compressed by pid \d+", lines[0])
    assert re.fullmatch(r"image cat\.png resized by pid \d+", lines[1])
    assert re.fullmatch(r"by exchange and routing key: image dog\.png resized by pid \d+",
                        lines[2])
    assert lines[3] in ("lowpri has no worker yet; state: PENDING",
                        "lowpri has no worker yet; state: SENT")
    assert re.fullmatch(r"tidied by pid \d+", lines[4])
    assert lines[5:] == ["config reloaded for queue lowpri", "config reloaded for queue video"]
    media_pid = lines[0].split()[-1]
    assert lines[1].split()[-1] == lines[2].split()[-1] == media_pid
    assert lines[4].split()[-1] != media_pid
