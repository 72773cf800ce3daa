"""The tasks of the README's quick start: start workers with ``zq workers -A examples.tasks``."""

from zq import App

app = App("examples")


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)
