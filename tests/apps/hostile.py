"""Tasks for the bad-input tests: ``zq workers -A tests.apps.hostile``.

The app keeps the default ``accept_content`` (msgpack and json), so pickle is refused.
"""

from zq import App

app = App("hostile")


@app.task
def add(x, y):
    return x + y


@app.task
def echo(value):
    return value
