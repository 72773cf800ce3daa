"""The router: accepts tasks, journals them, and hands them to actors that have credit.

:mod:`.loop` owns the sockets and the clock; the rules live in socket-free parts:
:mod:`.intake` (taking tasks in), :mod:`.dispatch` (credit and queues), :mod:`.schedule`
(timers, expiry, rate limits), :mod:`.members` (actors and hosts), :mod:`.control`
(control operations), :mod:`.book` (the task table), :mod:`.durable` (what waits for the
journal, :mod:`.journal`), tied together by :mod:`.core`.
"""

from .book import RecentKeys
from .config import RouterConfig
from .loop import JournalFailed, Router, main

__all__ = ["JournalFailed", "RecentKeys", "Router", "RouterConfig", "main"]
