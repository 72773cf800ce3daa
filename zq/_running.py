"""The tasks running in each thread, innermost last: a leaf any module may use.

``zq.trace`` pushes a call's task and request while it runs; ``zq.task.current_task``
and ``current_request`` read the innermost.
"""

from __future__ import annotations

import threading
from typing import Any

_running = threading.local()


def push(task: Any, request: Any) -> None:
    _running.__dict__.setdefault("tasks", []).append(task)
    _running.__dict__.setdefault("requests", []).append(request)


def pop() -> None:
    _running.tasks.pop()
    _running.requests.pop()


def innermost_task() -> Any:
    tasks: list[Any] = getattr(_running, "tasks", [])
    return tasks[-1] if tasks else None


def innermost_request() -> Any:
    requests: list[Any] = getattr(_running, "requests", [])
    return requests[-1] if requests else None
