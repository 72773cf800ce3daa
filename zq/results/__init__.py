"""The results actor: the last state of every task, kept and streamed.

The router starts it as a child process (``main``) and forwards the actors' state events
to it; clients ask it for states (GET, WAIT, SNAPSHOT), forget them (FORGET) and watch
its stream of changes. Its parts:

* :mod:`.actor`: the process and its loop; :mod:`.queries`, one handler per query;
  :mod:`.sockets`, binding the endpoints clients know and bounding each peer;
  :mod:`.config`, what it is started with and the store it opens;
* :mod:`.table`: the latest row of every task and the rule for which state stands;
* :mod:`.stream`: the published changes, numbered for late and slow subscribers;
* :mod:`.waiters`: the clients blocked in WAIT;
* :mod:`.store`: the ``Store`` protocol, kept by :mod:`.sqlite` (the default) and
  :mod:`.memory`.
"""

from .actor import ResultsActor, main
from .config import ResultsConfig
from .memory import MemoryStore
from .sqlite import SQLiteStore
from .store import Store

__all__ = ["MemoryStore", "ResultsActor", "ResultsConfig", "SQLiteStore", "Store", "main"]
