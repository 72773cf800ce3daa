"""The RQ side of ``peers.py``: the same ``add`` on the ``default`` queue, with Redis holding
the queue and the results (``add.delay`` comes from RQ's ``job`` decorator).

The Redis URL comes from ``ZQ_BENCH_REDIS_URL``, set by the benchmark for the workers and
itself.
"""

import os

from redis import Redis
from rq.decorators import job

REDIS_URL = os.environ.get("ZQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

connection = Redis.from_url(REDIS_URL)


@job("default", connection=connection)
def add(x: int, y: int) -> int:
    return x + y
