"""An app that ignores results app-wide (``task_ignore_result=True``):
``zq workers -A tests.apps.api_noresult`` consumes its own default queue, ``noresult``."""

import os
from pathlib import Path

from zq import App

app = App("api_noresult", task_ignore_result=True, task_default_queue="noresult")


@app.task
def touch(path):
    Path(path).write_text(str(os.getpid()))
    return path


@app.task
def fail(message):
    raise ValueError(message)
