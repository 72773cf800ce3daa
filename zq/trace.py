"""How one call of a task runs: Celery's rules for states, retries and handlers.

:func:`trace` runs a task's body once with its request pushed, and says how it ended
(:class:`Outcome`); the worker reports that outcome, and ``Task.apply`` turns it into an
eager result. It takes the task through :class:`Traced`, what it uses of a task.
"""

from __future__ import annotations

import logging
import random
import traceback as tb_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import _running, states
from .errors import Ignore, Reject, Retry, SerializationError

logger = logging.getLogger("zq.task")


class Call(Protocol):
    """What ``trace`` reads of a call's request (zq.task.Request)."""

    @property
    def id(self) -> str | None: ...

    @property
    def retries(self) -> int: ...


class Traced(Protocol):
    """What ``trace`` uses of a task (zq.task.Task); handlers are looked up by name."""

    @property
    def name(self) -> str | None: ...

    @property
    def autoretry_for(self) -> tuple[type[BaseException], ...]: ...

    @property
    def dont_autoretry_for(self) -> tuple[type[BaseException], ...]: ...

    @property
    def retry_kwargs(self) -> dict[str, Any]: ...

    @property
    def retry_backoff(self) -> bool | float: ...

    @property
    def retry_backoff_max(self) -> float: ...

    @property
    def retry_jitter(self) -> bool: ...

    @property
    def throws(self) -> tuple[type[BaseException], ...]: ...

    @property
    def request(self) -> Any: ...

    def run(self, *args: Any, **kwargs: Any) -> Any: ...

    def push_request(self, request: Any) -> None: ...

    def pop_request(self) -> None: ...

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None: ...

    def retry(self, *, exc: BaseException | None = ..., **options: Any) -> Retry: ...


class ExceptionInfo:
    """What handlers get as ``einfo``: the exception and its formatted traceback."""

    def __init__(self, exc: BaseException, traceback: str):
        self.exception = exc
        self.type = type(exc)
        self.traceback = traceback

    def __str__(self) -> str:
        return self.traceback


@dataclass
class Outcome:
    """How one run of a task ended. ``state`` is a task state, or IGNORED / REJECTED."""

    state: str
    retval: Any = None
    traceback: str | None = None
    requeue: bool = False
    retry_when: float | None = None


IGNORED = "IGNORED"

Report = Callable[[Outcome], None]


def backoff_countdown(task: Traced, retries: int) -> float:
    """Celery's exponential backoff: min(max, factor * 2**retries), jittered down to 0..that."""
    factor = 1 if task.retry_backoff is True else float(task.retry_backoff)
    countdown = min(task.retry_backoff_max, factor * (2.0 ** retries))
    if task.retry_jitter:
        countdown = random.randrange(int(countdown) + 1)
    return max(0.0, countdown)


def _run(task: Traced, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    try:
        return task.run(*args, **kwargs)
    except (Retry, Ignore, Reject):
        raise
    except Exception as exc:
        if not task.autoretry_for or not isinstance(exc, task.autoretry_for):
            raise
        if task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for):
            raise
        retry_kwargs = dict(task.retry_kwargs)
        if task.retry_backoff:
            retry_kwargs["countdown"] = backoff_countdown(task, task.request.retries)
        raise task.retry(exc=exc, **retry_kwargs) from None


def _call_handler(task: Traced, handler: str, task_id: str, *args: Any) -> None:
    """Run a handler; what it raises is logged and never ends the worker."""
    try:
        getattr(task, handler)(*args)
    except Exception:
        logger.exception("%s handler of task %s[%s] raised", handler, task.name, task_id)


def trace(task: Traced, request: Call, args: Sequence[Any], kwargs: dict[str, Any],
          report: Report | None = None) -> Outcome:
    """Run one call of ``task`` with Celery's rules for states, retries and handlers.

    ``report`` is called with the outcome before the success, failure and retry handlers
    run, as Celery stores a result before it calls them. A failure to report (a result that
    will not serialize) turns the outcome into a FAILURE.
    """
    task_id = request.id or ""
    task.push_request(request)
    _running.push(task, request)
    try:
        try:
            task.before_start(task_id, args, kwargs)
            retval = _run(task, args, kwargs)
        except Retry as exc:
            eager = exc.eager_result
            if eager is not None:
                return Outcome(eager.state, eager.result, eager.traceback)
            reason = exc.exc if exc.exc is not None else exc
            text = _format(reason)
            outcome = Outcome(states.RETRY, reason, text, retry_when=exc.when)
            _report(report, outcome)
            _call_handler(task, "on_retry", task_id, reason, task_id, args, kwargs,
                          ExceptionInfo(reason, text))
        except Ignore:
            outcome = Outcome(IGNORED)
        except Reject as exc:
            outcome = Outcome(states.REJECTED, exc, _format(exc), requeue=exc.requeue)
        except Exception as exc:
            outcome = _failure(task, task_id, args, kwargs, exc, report)
        else:
            outcome = Outcome(states.SUCCESS, retval)
            try:
                _report(report, outcome)
            except SerializationError as exc:
                return _finish(task, request, args, kwargs,
                               _failure(task, task_id, args, kwargs, exc, report))
            _call_handler(task, "on_success", task_id, retval, task_id, args, kwargs)
        return _finish(task, request, args, kwargs, outcome)
    finally:
        task.pop_request()
        _running.pop()


def _finish(task: Traced, request: Call, args: Sequence[Any], kwargs: dict[str, Any],
            outcome: Outcome) -> Outcome:
    if outcome.state != IGNORED:
        einfo = (ExceptionInfo(outcome.retval, outcome.traceback or "")
                 if isinstance(outcome.retval, BaseException) else None)
        task_id = request.id or ""
        _call_handler(task, "after_return", task_id, outcome.state, outcome.retval, task_id,
                      args, kwargs, einfo)
    return outcome


def _failure(task: Traced, task_id: str, args: Sequence[Any], kwargs: dict[str, Any],
             exc: BaseException, report: Report | None) -> Outcome:
    text = _format(exc)
    outcome = Outcome(states.FAILURE, exc, text)
    expected = bool(task.throws) and isinstance(exc, task.throws)
    log = logger.info if expected else logger.error
    log("Task %s[%s] raised unexpected: %s", task.name, task_id,
        f"{type(exc).__name__}({exc})" if expected else text.rstrip())
    try:
        _report(report, outcome)
    except SerializationError:
        logger.exception("could not report failure of %s[%s]", task.name, task_id)
    _call_handler(task, "on_failure", task_id, exc, task_id, args, kwargs, ExceptionInfo(exc, text))
    return outcome


def _report(report: Report | None, outcome: Outcome) -> None:
    if report is not None:
        report(outcome)


def _format(exc: BaseException) -> str:
    return "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
