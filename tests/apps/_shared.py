"""Pieces the test apps share: their tasks stay in each app, their bodies may live here."""

import time
from pathlib import Path


def wait_for(path, timeout_s):
    """Return once ``path`` exists (the test creates it when it wants the task to go on)."""
    deadline = time.monotonic() + timeout_s
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s}s")
        time.sleep(0.01)


def report_progress(task, steps, start_gate, end_gate=None):
    """Once ``start_gate`` exists report PROGRESS ``steps`` times, then (once ``end_gate``
    exists, when given) return ``steps``."""
    wait_for(start_gate, 20.0)
    for done in range(1, steps + 1):
        task.update_state(state="PROGRESS", meta={"done": done, "total": steps})
    if end_gate is not None:
        wait_for(end_gate, 20.0)
    return steps
