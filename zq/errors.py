"""The one exception tree of zq.

::

    ZqError
    ├── ConfigurationError          bad setting, bad endpoint, bad -A path
    ├── ProtocolError               a frame that is not zq's protocol
    ├── SerializationError
    │   ├── ContentDisallowed       a content type the receiver does not accept
    │   └── DecodeError             a payload that will not deserialize
    ├── PublishError                the router refused a task or did not answer
    │   ├── QueueFull               the queue is at max_queue_length
    │   └── NoRoute                 mandatory=True and no queue is bound
    ├── TimeoutError                AsyncResult.get(timeout=...) ran out
    ├── NotRegistered               a task name the worker does not know
    ├── TaskError                   a remote exception that cannot be rebuilt locally
    ├── WorkerLostError             the process running the task died
    ├── TimeLimitExceeded           hard time limit: the process was killed
    ├── SoftTimeLimitExceeded       raised inside a task at its soft time limit
    ├── MaxRetriesExceededError     retry() past max_retries with no exc
    ├── TaskRevokedError            the task was revoked or expired
    ├── CanvasNotSupported          a canvas shape zq cannot run yet (a chord)
    └── control flow signals, raised by task code and handled by the worker:
        ├── Retry
        ├── Ignore
        └── Reject
"""

from __future__ import annotations

from typing import Any


class ZqError(Exception):
    """Base of every exception zq raises."""


class ConfigurationError(ZqError):
    """A setting, endpoint or import path that cannot be used."""


class ProtocolError(ZqError):
    """A message that does not follow zq's wire protocol."""


class SerializationError(ZqError):
    """A value that cannot be serialized or a payload that cannot be read."""


class ContentDisallowed(SerializationError):
    """A content type the receiving side does not accept (pickle unless enabled)."""


class DecodeError(SerializationError):
    """A payload that does not deserialize with its declared content type."""


class PublishError(ZqError):
    """The router refused a task or did not answer within ``publish_timeout_s``.

    ``outcome`` says which: ``"refused"`` (the router answered no: the task will not
    run), ``"not sent"`` (no attempt left this client: it will not run) or ``"unknown"``
    (sent, never answered: it may run; sending it again with the same ``task_id`` is safe).
    """

    def __init__(self, *args: object, outcome: str = "refused") -> None:
        super().__init__(*args)
        self.outcome = outcome


class QueueFull(PublishError):
    """The target queue holds ``max_queue_length`` tasks already."""


class NoRoute(PublishError):
    """``mandatory=True`` and no queue is bound for the routing key."""


class TimeoutError(ZqError):  # noqa: A001 - mirrors celery.exceptions.TimeoutError
    """``AsyncResult.get(timeout=...)`` returned before the task was ready."""


class NotRegistered(ZqError):
    """A task name that is not in the registry."""


class CanvasNotSupported(ZqError, NotImplementedError):
    """A canvas shape zq cannot run yet: a chord, or a group after a task in a chain."""


class WorkerLostError(ZqError):
    """The process running the task died before it finished."""


class TimeLimitExceeded(ZqError):
    """The task ran past its hard time limit and its process was killed."""


class SoftTimeLimitExceeded(ZqError):
    """Raised inside a task when its soft time limit passes."""


class MaxRetriesExceededError(ZqError):
    """``retry()`` was called with the retries used up and no ``exc`` to raise."""


class TaskRevokedError(ZqError):
    """The task was revoked or expired before it could run."""


class TaskError(ZqError):
    """A task's exception whose class could not be rebuilt on this side.

    Carries what travelled: the remote type name, module, message and traceback text.
    """

    def __init__(self, exc_type: str, exc_module: str, message: str, traceback: str | None = None):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.message = message
        self.traceback = traceback


class Retry(ZqError):
    """Raised by ``Task.retry()`` to tell the worker the task was re-sent."""

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: float | None = None):
        self.message = message
        self.exc = exc
        self.when = when
        # Under Task.apply() the retry runs at once: its EagerResult, for the first call.
        self.eager_result: Any = None
        super().__init__(message or (f"Retry in {when}s" if when is not None else "Retry"))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.exc, self.when)


class ChordError(ZqError):
    """A chord's header task did not succeed: the chord's body never runs and fails with
    this, naming the task (``Dependency <id> raised ...``)."""


class Ignore(ZqError):
    """Raised by a task to end it with no state recorded."""


class Reject(ZqError):
    """Raised by a task to reject its message; ``requeue=True`` puts it back (acks_late)."""

    def __init__(self, reason: Any = None, requeue: bool = False):
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)
