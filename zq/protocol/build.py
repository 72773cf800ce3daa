"""Building the headers that several processes send: errors, state events, exceptions."""

from __future__ import annotations

from typing import Any

from .frames import Cmd, Message


def error(message: str, *, kind: str = "ProtocolError", task_id: str | None = None) -> Message:
    """An ERROR reply naming the exception class the sender should raise."""
    header: dict[str, Any] = {"error": kind, "message": message}
    if task_id is not None:
        header["id"] = task_id
    return Message(Cmd.ERROR, header)


def state_event(task_id: str, state: str, *, retries: int = 0, name: str | None = None,
                content_type: str | None = None, body: bytes | None = None,
                exc: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """One state change of one task, as the router and actors send it to the results actor.

    ``body`` is the result (SUCCESS) or the meta (custom states) in ``content_type``; ``exc``
    is an exception as data (FAILURE, RETRY, REVOKED). The results actor adds ``seq``,
    ``version`` and ``ts`` (when absent).
    """
    event: dict[str, Any] = {"id": task_id, "state": state, "retries": retries}
    if name is not None:
        event["name"] = name
    if body is not None:
        event["ct"] = content_type
        event["body"] = body
    if exc is not None:
        event["exc"] = exc
    event.update(extra)
    return event


def exception_data(kind: str, message: str, *, module: str = "zq.errors",
                   args: list[Any] | None = None,
                   traceback: str | None = None) -> dict[str, Any]:
    """An exception as it travels in a state event: its class and module, message, args
    and traceback text. The client rebuilds it (zq._remote.data_to_exception)."""
    return {"type": kind, "module": module, "message": message,
            "args": [message] if args is None else args, "traceback": traceback}
