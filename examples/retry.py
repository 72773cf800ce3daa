"""Retrying, as in Celery's guide: ``self.retry(exc=...)`` and ``autoretry_for`` with backoff.

    python examples/retry.py
"""

import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zq import App, get_task_logger  # noqa: E402

app = App("examples.retry")
logger = get_task_logger(__name__)


class FailWhale(Exception):
    """The service is over capacity; try again later."""


def post_status_update(message: str, attempt: int) -> str:
    if attempt < 2:  # the first two attempts meet the fail whale
        raise FailWhale(f"over capacity (attempt {attempt})")
    return f"posted {message!r}"


@app.task(bind=True, default_retry_delay=0.2)
def tweet(self, message):
    try:
        return post_status_update(message, self.request.retries)
    except FailWhale as exc:
        logger.warning("retrying: %s", exc)
        raise self.retry(exc=exc)


@app.task(autoretry_for=(ConnectionError,), retry_backoff=0.1, retry_jitter=False,
          max_retries=5)
def fetch(url, fail_times):
    from zq import current_task

    if current_task().request.retries < fail_times:
        raise ConnectionError(f"cannot reach {url}")
    return f"fetched {url} after {fail_times} retries"


@app.task(bind=True, max_retries=2, default_retry_delay=0.1)
def hopeless(self):
    raise self.retry(exc=ValueError(f"still broken ({random.random():.3f})"))


def main() -> None:
    from zq.testing import Cluster

    with tempfile.TemporaryDirectory() as tmp, \
            Cluster(tmp, app="examples.retry", concurrency=2) as cluster:
        app.conf.update(router=cluster.router)
        print(tweet.delay("hello from zq").get(timeout=20))
        print(fetch.delay("http://example.invalid", 3).get(timeout=20))
        result = hopeless.delay()
        try:
            result.get(timeout=20)
        except ValueError as exc:
            print(f"hopeless gave up after {result.retries} retries: ValueError({exc})")


if __name__ == "__main__":
    main()
