"""The Celery side of ``celery_compare.py`` and ``peers.py``: the same ``add``, with Redis as
broker and backend.

The Redis URL comes from ``ZQ_BENCH_REDIS_URL``, set by the benchmark for both the worker it
starts and itself, before either imports this module.
"""

import os

from celery import Celery

REDIS_URL = os.environ.get("ZQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("celery_tasks", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task
def add(x, y):
    return x + y
