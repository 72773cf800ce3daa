"""Logging for zq's processes and ``get_task_logger`` for task code."""

from __future__ import annotations

import logging
import sys

from .task import current_request, current_task

_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"
_TASK_FORMAT = ("[%(asctime)s: %(levelname)s/%(processName)s] "
                "%(task_name)s[%(task_id)s]: %(message)s")


class _TaskFilter(logging.Filter):
    """Adds the running task's name and id to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = current_request()
        task = current_task()
        record.task_id = request.id if request is not None else "???"
        record.task_name = task.name if task is not None else "???"
        return True


class _Formatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_FORMAT)
        self._task = logging.Formatter(_TASK_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "task_id", None) not in (None, "???"):
            return self._task.format(record)
        return super().format(record)


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task code whose records carry the task's name and id."""
    logger = logging.getLogger(f"zq.task.{name}" if not name.startswith("zq.task") else name)
    if not any(isinstance(f, _TaskFilter) for f in logger.filters):
        logger.addFilter(_TaskFilter())
    return logger


def setup_logging(level: str | int = "INFO") -> None:
    """Log to stderr at ``level`` with task names and ids where a task is running."""
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}")
        level = resolved
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler.addFilter(_TaskFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
