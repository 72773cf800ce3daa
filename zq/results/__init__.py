"""The results actor: the last state of every task, kept and streamed.

The router starts it as a child process (``main``) and forwards the actors' state events
to it; clients ask it for states (GET, WAIT, SNAPSHOT), forget them (FORGET) and watch
its stream of changes. Its parts:

* :mod:`.actor`: the process, its sockets and loop, one handler per query;
* :mod:`.table`: the latest row of every task and the rule for which state stands;
* :mod:`.stream`: the published changes, numbered for late and slow subscribers;
* :mod:`.waiters`: the clients blocked in WAIT;
* :mod:`.store`: the ``Store`` protocol, kept by :mod:`.sqlite` (the default) and
  :mod:`.memory`.
"""

from .actor import ResultsActor, ResultsConfig, main
from .memory import MemoryStore
from .sqlite import SQLiteStore
from .store import Store

__all__ = ["MemoryStore", "ResultsActor", "ResultsConfig", "SQLiteStore", "Store", "main"]
