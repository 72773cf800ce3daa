"""Input to the dashboard's API, checked before anything reaches the router.

Each check returns the value in the type the router takes, or raises :class:`BadInput`,
which the API answers with a 400 and ``{"error": ...}``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..protocol.ids import MAX_QUEUE_NAME, MAX_TASK_ID

# A task id as zq and Celery make them (uuids, derived ids with a counter or suffix).
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]*")
# A task name: a dotted Python path, as registered (Celery allows a few more characters).
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:@-]*")
_QUEUE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*")
_RATE = re.compile(r"\d+(\.\d+)?(/[smh])?")
MAX_TASK_NAME = 255
SIGNALS = frozenset({"SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2",
                     "SIGHUP"})
STATES = frozenset({"PENDING", "SENT", "RECEIVED", "STARTED", "SUCCESS", "FAILURE",
                    "REVOKED", "RETRY", "REJECTED", "IGNORED"})


class BadInput(ValueError):
    """A request the API refuses: its message says which field and why."""


def task_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TASK_ID \
            or not _TASK_ID.fullmatch(value):
        raise BadInput(f"not a task id: {_quote(value)}")
    return value


def task_name(value: Any, field: str = "task name") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TASK_NAME \
            or not _TASK_NAME.fullmatch(value):
        raise BadInput(f"not a {field}: {_quote(value)}")
    return value


def queue(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_QUEUE_NAME \
            or not _QUEUE.fullmatch(value):
        raise BadInput(f"not a queue name: {_quote(value)}")
    return value


def state(value: Any) -> str:
    if value not in STATES and not (isinstance(value, str) and value.isupper()
                                    and value.isidentifier() and len(value) <= 64):
        raise BadInput(f"not a state: {_quote(value)}")
    return str(value)


def integer(value: Any, field: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{field} must be a whole number, not {_quote(value)}") from None
    if isinstance(value, float) and not value.is_integer():
        raise BadInput(f"{field} must be a whole number, not {_quote(value)}")
    if not low <= number <= high:
        raise BadInput(f"{field} must be between {low} and {high}, not {number}")
    return number


def seconds(value: Any, field: str, high: float = 86400.0 * 366) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{field} must be a number of seconds, not {_quote(value)}") from None
    if not math.isfinite(number) or not 0 <= number <= high:
        raise BadInput(f"{field} must be between 0 and {high:g} seconds, not {_quote(value)}")
    return number


def optional_seconds(value: Any, field: str) -> float | None:
    return None if value in (None, "", "none", "None") else seconds(value, field)


def rate(value: Any) -> str:
    text = str(value).strip() if isinstance(value, (str, int, float)) else None
    if text is None or not _RATE.fullmatch(text):
        raise BadInput(f"not a rate limit: {_quote(value)} (such as 10/s, 100/m, 0 for none)")
    return text


def signal(value: Any) -> str:
    if value not in SIGNALS:
        raise BadInput(f"not a signal: {_quote(value)}; one of {', '.join(sorted(SIGNALS))}")
    return str(value)


def flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None or value in ("", "0", "false", "False", "no", "off"):
        return False
    if value in ("1", "true", "True", "yes", "on"):
        return True
    raise BadInput(f"{field} must be true or false, not {_quote(value)}")


def known(value: str, names: set[str] | list[str], what: str) -> str:
    if value not in names:
        raise BadInput(f"no {what} named {_quote(value)}")
    return value


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
