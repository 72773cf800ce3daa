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
from . import _running
from .utils import from_timestamp


class ResultBackend(Protocol):
    """Where results are asked for and waited on (``ResultsClient``)."""

    def get(self, ids: list[str], timeout_s: float = ...) -> list[dict[str, Any]]: ...

    def forget(self, ids: list[str], timeout_s: float = ...) -> None: ...

    def track(self, result: AsyncResult) -> None: ...

    def wait(self, task_id: str, timeout_s: float | None,
             also: list[str] | None = None) -> dict[str, Any]: ...


class ResultsApp(Protocol):
    """What a result needs of its App: settings, the results backend, revoking."""

    @property
    def settings(self) -> Settings: ...

    @property
    def control(self) -> Control: ...

    def results_client(self) -> ResultBackend: ...

    def published(self, task_id: str, timeout_s: float | None = None) -> None: ...

    def sent_here(self, task_id: str) -> bool: ...


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


def assert_will_not_block(disable_sync_subtasks: bool = True) -> None:
    """Celery's rule: no waiting for a result inside a task running on a worker."""
    request = _running.innermost_request()
    if disable_sync_subtasks and request is not None and not request.is_eager:
        raise RuntimeError("Never call result.get() within a task! It can deadlock the "
                           "worker; pass disable_sync_subtasks=False if you must")


class AsyncResult:
    """A task's state and result, fetched from the results actor.

    Once the task is ready its state is kept here, so asking again costs nothing.
    """

    def __init__(self, id: str, app: ResultsApp | None = None,  # noqa: A002
                 task_name: str | None = None, parent: Any = None,
                 ignored: bool = False):
        self.id = id
        self.app: ResultsApp = app if app is not None else current_app()
        self._task_name = task_name
        self._meta: dict[str, Any] | None = None
        # The chain link before this one, where this client sent the chain.
        self.parent = parent
        # The results this task leads to, where this client knows them (the next link of
        # a chain it sent); None where they are not known here.
        self.children: list[Any] | None = None
        # Sent with ignore_result: nothing will be stored, so get() returns None at once.
        self.ignored = ignored

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
        """The task's state; one accepted but not started reads PENDING, as in Celery,
        unless the App sets ``task_track_sent`` (then SENT)."""
        state = str(self._get_meta().get("state", states.PENDING))
        if state == states.SENT and not self.app.settings.task_track_sent:
            return states.PENDING
        if state == states.PENDING and self.app.settings.task_track_sent \
                and self.app.sent_here(self.id):
            # This thread sent it: its SENT may still be on its way to the results actor.
            return states.SENT
        return state

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
    def worker(self) -> str | None:
        """The actor that ran it (``host/index/generation``), once it ended; as Celery's
        extended results have it."""
        worker = self._get_meta().get("worker")
        return worker if isinstance(worker, str) else None

    @property
    def queue(self) -> str | None:
        """The queue it was routed to (known while it waits; SENT says it)."""
        queue = self._get_meta().get("queue")
        return queue if isinstance(queue, str) else None

    @property
    def runtime(self) -> float | None:
        """Seconds its body ran, as its actor measured, once it ended."""
        runtime = self._get_meta().get("runtime")
        return float(runtime) if isinstance(runtime, (int, float)) else None

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

    def accepted(self, timeout: float | None = None) -> AsyncResult:
        """Wait until the router has accepted the task (``apply_async`` returns before
        that); raise why it refused it (``QueueFull``, ``NoRoute``, a ``PublishError``)."""
        self.app.published(self.id, timeout)
        return self

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, disable_sync_subtasks: bool = True,
            **_ignored: Any) -> Any:
        """Wait for the task to be ready and return its value.

        Woken by the results actor's push, not by polling (``interval`` is accepted for
        Celery's sake and unused). With ``propagate`` a failed task's exception is raised
        here as its own class where it can be imported, else as :class:`zq.TaskError`.

        Inside a running task it raises RuntimeError, as Celery does: a worker waiting on
        another task can deadlock the pool. ``disable_sync_subtasks=False`` allows it.
        """
        if self.ignored:
            return None
        assert_will_not_block(disable_sync_subtasks)
        if self._meta is None:
            # A task sent without waiting: a refusal by the router is raised by the wait.
            results = self.app.results_client()
            results.track(self)
            self.set_meta(results.wait(self.id, timeout, also=self._sent_before()))
        meta = self._meta
        assert meta is not None
        value = self._decode(meta)
        if propagate and meta["state"] in states.PROPAGATE_STATES:
            raise value
        return value

    wait = get

    def _sent_before(self) -> list[str]:
        """The ids of the links of its chain sent before it (its parents): a refusal of
        one of them is a refusal of this result too, which would otherwise never come."""
        ids: list[str] = []
        parent = self.parent
        while isinstance(parent, AsyncResult) and len(ids) < 100:
            ids.append(parent.id)
            parent = parent.parent
        return ids

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """``(result, value)`` for this result and then the children known here,
        breadth first, waiting for each (``get(**kwargs)``)."""
        kwargs.setdefault("disable_sync_subtasks", False)
        queue: list[Any] = [self]
        while queue:
            node = queue.pop(0)
            yield node, node.get(**kwargs)
            queue.extend(getattr(node, "children", None) or [])

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
