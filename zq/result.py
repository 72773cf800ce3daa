"""The client's view of a task's result: AsyncResult, and EagerResult for local runs."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from . import serialization, states
from ._current import current_app
from ._remote import data_to_exception
from .config import Settings
from .control import Control
from .errors import SerializationError, TaskRevokedError
from .utils import from_timestamp


class ResultBackend(Protocol):
    """Where results are asked for and waited on (``ResultsClient``)."""

    def get(self, ids: list[str], timeout_s: float = ...) -> list[dict[str, Any]]: ...

    def forget(self, ids: list[str], timeout_s: float = ...) -> None: ...

    def track(self, result: AsyncResult) -> None: ...

    def wait(self, task_id: str, timeout_s: float | None) -> dict[str, Any]: ...


class ResultsApp(Protocol):
    """What a result needs of its App: settings, the results backend, revoking."""

    @property
    def settings(self) -> Settings: ...

    @property
    def control(self) -> Control: ...

    def results_client(self) -> ResultBackend: ...


def value_of(meta: dict[str, Any], content_types: Iterable[str], *,
             quiet: bool = False) -> Any:
    """What a stored state holds: the return value, the exception of a failed task (as
    its own class where it can be imported), or a custom state's meta.

    With ``quiet``, a payload that cannot be read here is None instead of an error.
    """
    state = meta.get("state")
    exc = meta.get("exc")
    if exc is not None:
        if state == states.REVOKED:
            return TaskRevokedError(exc.get("message", "revoked"))
        return data_to_exception(exc)
    body = meta.get("body")
    if body is None:
        return None
    try:
        return serialization.loads(body, meta.get("ct", ""),
                                   serialization.content_types(content_types))
    except SerializationError:
        if quiet:
            return None
        raise


class AsyncResult:
    """A task's state and result, fetched from the results actor.

    Once the task is ready its state is kept here, so asking again costs nothing.
    """

    def __init__(self, id: str, app: ResultsApp | None = None,  # noqa: A002
                 task_name: str | None = None):
        self.id = id
        self.app: ResultsApp = app if app is not None else current_app()
        self._task_name = task_name
        self._meta: dict[str, Any] | None = None

    @property
    def task_id(self) -> str:
        return self.id

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Keep ``meta``, this task's stored state, once it is ready: a ready state never
        changes, so it is not asked for again. The results client calls this when the
        state arrives for a result that waits for it."""
        if meta.get("state") in states.READY_STATES:
            self._meta = meta

    def _get_meta(self) -> dict[str, Any]:
        if self._meta is not None:
            return self._meta
        meta = self.app.results_client().get([self.id])[0]
        self.set_meta(meta)
        return meta

    @property
    def state(self) -> str:
        return str(self._get_meta().get("state", states.PENDING))

    status = state

    @property
    def name(self) -> str | None:
        return self._get_meta().get("name") or self._task_name

    @property
    def result(self) -> Any:
        """The return value, the exception of a failed task, or the meta of a custom state."""
        return self._decode(self._get_meta())

    info = result

    @property
    def traceback(self) -> str | None:
        exc = self._get_meta().get("exc")
        return exc.get("traceback") if exc else None

    @property
    def retries(self) -> int:
        return int(self._get_meta().get("retries", 0))

    @property
    def date_done(self) -> dt.datetime | None:
        meta = self._get_meta()
        return from_timestamp(meta.get("ts")) if meta.get("state") in states.READY_STATES else None

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, disable_sync_subtasks: bool = True,
            **_ignored: Any) -> Any:
        """Wait for the task to be ready and return its value.

        Woken by the results actor's push, not by polling (``interval`` is accepted for
        Celery's sake and unused). With ``propagate`` a failed task's exception is raised
        here as its own class where it can be imported, else as :class:`zq.TaskError`.
        """
        if self._meta is None:
            results = self.app.results_client()
            results.track(self)
            self.set_meta(results.wait(self.id, timeout))
        meta = self._meta
        assert meta is not None
        value = self._decode(meta)
        if propagate and meta["state"] in states.PROPAGATE_STATES:
            raise value
        return value

    wait = get

    def forget(self) -> None:
        """Delete the stored result."""
        self._meta = None
        self.app.results_client().forget([self.id])

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def _decode(self, meta: dict[str, Any]) -> Any:
        return value_of(meta, self.app.settings.result_content_types)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return self.id == other.id
        if isinstance(other, str):
            return self.id == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id


class EagerResult(AsyncResult):
    """The result of ``Task.apply()``: already known, nothing to ask the results actor."""

    def __init__(self, id: str, retval: Any, state: str, traceback: str | None = None,  # noqa: A002
                 app: ResultsApp | None = None):
        super().__init__(id, app)
        self._retval = retval
        self._state = state
        self._traceback = traceback
        self._meta = {"id": id, "state": state}

    def _get_meta(self) -> dict[str, Any]:
        return {"id": self.id, "state": self._state}

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._retval

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, disable_sync_subtasks: bool = True,
            **_ignored: Any) -> Any:
        """The value at once: the task ran already; a failure is raised with ``propagate``."""
        if propagate and self._state in states.PROPAGATE_STATES and isinstance(
                self._retval, BaseException):
            raise self._retval
        return self._retval

    wait = get

    def forget(self) -> None:
        """Nothing is stored for an eager result."""

    def _decode(self, meta: dict[str, Any]) -> Any:
        return self._retval


class GroupResult:
    """The results of a group, in the order its tasks were given."""

    def __init__(self, id: str, results: list[AsyncResult],  # noqa: A002
                 app: ResultsApp | None = None):
        self.id = id
        self.results = results
        self.app = app

    def get(self, timeout: float | None = None, propagate: bool = True,
            **_ignored: Any) -> list[Any]:
        """Every task's value, in order; ``timeout`` bounds the whole wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[Any] = []
        for result in self.results:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            values.append(result.get(timeout=remaining, propagate=propagate))
        return values

    join = get

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"
