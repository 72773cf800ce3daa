"""The Huey side of ``peers.py``: the same ``add``, with Redis as queue and result store.

``notify_result=True`` (Huey 3) has the worker push a notification with each result, so a
blocking ``Result.get`` waits on it (BLPOP) instead of polling with backoff. The Redis URL
comes from ``ZQ_BENCH_REDIS_URL``, set by the benchmark for the consumer and itself.
"""

import os

from huey import RedisHuey

REDIS_URL = os.environ.get("ZQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

huey = RedisHuey("zq_bench", url=REDIS_URL, notify_result=True)


@huey.task()
def add(x: int, y: int) -> int:
    return x + y
