"""Exceptions as data: how a task's failure travels and is rebuilt on the client."""

from __future__ import annotations

import builtins
import sys
import traceback as tb_module
from typing import Any

from .errors import TaskError
from .protocol import exception_data


def exception_to_data(exc: BaseException, traceback_text: str | None = None) -> dict[str, Any]:
    """The msgpack-safe description of ``exc``: type, module, message, args, traceback."""
    cls = type(exc)
    if traceback_text is None and exc.__traceback__ is not None:
        traceback_text = "".join(tb_module.format_exception(cls, exc, exc.__traceback__))
    args = []
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, (str, int, float, bool, type(None), bytes)):
            args.append(arg)
        else:
            args.append(repr(arg))
    return exception_data(cls.__qualname__, str(exc), module=cls.__module__, args=args,
                          traceback=traceback_text)


def _find_class(module: str, qualname: str) -> type[BaseException] | None:
    """The exception class, looked up only in modules this process imported already.

    Never imports: the names come from the network, and importing a module a stored
    result names would run code of the sender's choosing.
    """
    obj: Any = builtins if module == "builtins" else sys.modules.get(module)
    if obj is None:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None


def data_to_exception(data: dict[str, Any]) -> BaseException:
    """Rebuild the original exception where its class is known here, else a TaskError."""
    type_name = str(data.get("type", "Exception"))
    module = str(data.get("module", "builtins"))
    message = str(data.get("message", ""))
    traceback_text = data.get("traceback")
    cls = _find_class(module, type_name)
    exc: BaseException | None = None
    if cls is not None and not issubclass(cls, (SystemExit, KeyboardInterrupt, GeneratorExit)):
        try:
            exc = cls(*data.get("args", [message]))
        except Exception:
            try:
                exc = cls(message)
            except Exception:
                exc = None
    if exc is None:
        exc = TaskError(type_name, module, message, traceback_text)
    exc.__zq_traceback__ = traceback_text  # type: ignore[attr-defined]
    return exc
