"""What feeds the view: the results actor's state stream and the router's inspect answers.

Two threads, each with its own sockets (an App's sockets are per thread): one follows
every task state change (a watch of all tasks: the snapshot of unfinished tasks first,
then every change, so a dashboard started late misses none of those), the other asks the
router for its stats and the workers' work every ``poll_interval_s``. Requests the pages
and the API make (inspect on demand, control) run on a small pool of their own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..app import App
from ..errors import ZqError
from .metrics import Metrics
from .view import FINAL, View

logger = logging.getLogger("zq.dashboard")

T = TypeVar("T")
# Settings and the names of the workers change rarely: asked every this many polls.
_SLOW_EVERY = 5
# An id no task has: asking the results actor for it tells whether it answers.
_PROBE_ID = "zq-dashboard-probe"


class Feed:
    def __init__(self, app: App, view: View, metrics: Metrics, poll_interval_s: float = 1.5):
        self.app = app
        self.view = view
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="zq-dashboard")
        self._threads = [threading.Thread(target=self._watch, name="zq-dashboard-watch",
                                          daemon=True),
                         threading.Thread(target=self._poll, name="zq-dashboard-poll",
                                          daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run a request to the router off the web loop, on the feed's own threads."""
        return await asyncio.wrap_future(self._pool.submit(fn))

    # -- the state stream -----------------------------------------------------------------

    def _watch(self) -> None:
        apply, observe = self.view.apply, self.metrics.observe
        while not self._stopping.is_set():
            try:
                for event in self.app.results_client().watch(None, None):
                    row = apply(event, time.time())
                    if row is not None:
                        state = row.state
                        observe(row.name, state, row.runtime() if state in FINAL else None)
                    if self._stopping.is_set():
                        return
            except Exception as exc:  # the stream is followed again from a new snapshot
                logger.warning("following task states failed (%s); again in 1 s", exc)
                self.app.close()
                self._stopping.wait(1.0)

    # -- polls --------------------------------------------------------------------------------

    def _poll(self) -> None:
        rounds = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self.view.apply_poll(self.ask(slow=rounds % _SLOW_EVERY == 0), time.time())
                rounds += 1
            except Exception as exc:
                if self.view.router_up:
                    logger.warning("the router did not answer: %s", exc)
                self.view.router_down()
                self.app.close()
            self._probe_results()
            self._stopping.wait(max(0.05, self.poll_interval_s - (time.monotonic() - started)))

    def ask(self, slow: bool) -> dict[str, Any]:
        inspect = self.app.control.inspect(timeout=2.0)
        poll = {"stats": inspect.stats(), "active": inspect.active(),
                "reserved": inspect.reserved(), "scheduled": inspect.scheduled()}
        if slow:
            poll.update(conf=inspect.conf(), registered=inspect.registered())
        else:
            with self.view.lock:
                poll["registered"] = None
                poll["conf"] = {h["name"]: h.get("conf") for h in self.view.hosts.values()}
        return poll

    def _probe_results(self) -> None:
        try:
            self.app.results_client().get([_PROBE_ID], timeout_s=2.0)
            up = True
        except (ZqError, OSError) as exc:
            logger.debug("the results actor did not answer: %s", exc)
            up = False
        with self.view.lock:
            self.view.results_up = up
