"""Tasks for ``bench/chord.py``: ``zq workers -A chord_tasks`` (with bench/ on the path)."""

import time

from zq import App

app = App("bench-chords")


@app.task
def ended(i):
    """A header task: returns when it ended, by this machine's clock."""
    return [i, time.time()]


@app.task
def lag(parts):
    """A chord's body: how long after the last header task ended it started (seconds),
    and whether the header's results came in header order."""
    started = time.time()
    in_order = [i for i, _ in parts] == list(range(len(parts)))
    return {"lag_s": started - max(t for _, t in parts), "parts": len(parts),
            "in_order": in_order}
