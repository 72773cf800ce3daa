"""The Dramatiq side of ``peers.py``: the same ``add``, with a Redis broker and the Results
middleware on a Redis backend.

The Redis URL comes from ``ZQ_BENCH_REDIS_URL``, set by the benchmark for the workers and
itself.
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

REDIS_URL = os.environ.get("ZQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

backend = RedisBackend(url=REDIS_URL)
broker = RedisBroker(url=REDIS_URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def add(x: int, y: int) -> int:
    return x + y
