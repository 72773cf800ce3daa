"""``zq workers``: a supervisor and its actor processes on one host.

``config`` holds the one configuration, ``supervisor`` the parent process, ``actor`` each
child's loop, ``execute`` the running of one task, ``loader`` finding the app (``-A``).
"""

from .config import ActorConfig, WorkerConfig
from .loader import load_app
from .supervisor import EXIT_COLD_SHUTDOWN, EXIT_OK, Supervisor, main

__all__ = ["EXIT_COLD_SHUTDOWN", "EXIT_OK", "ActorConfig", "Supervisor", "WorkerConfig",
           "load_app", "main"]
