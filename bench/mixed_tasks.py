"""Tasks for ``bench/mixed.py``: ``zq workers -A mixed_tasks`` (with bench/ on the path)."""

import time

from zq import App

app = App("bench-mixed")


@app.task
def long_task(seconds):
    """Runs ``seconds``; returns when it ended, by this machine's clock."""
    time.sleep(seconds)
    return time.time()


@app.task
def short_task(i):
    """Returns at once: when it ended."""
    return time.time()
