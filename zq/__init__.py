"""zq: a distributed task queue with Celery's programming model and no broker."""

from . import states
from .app import App
from .canvas import Signature, chain, chord, chunks, group, maybe_signature, signature, xmap, xstarmap
from .errors import (
    CanvasNotSupported,
    ChordError,
    ConfigurationError,
    ContentDisallowed,
    DecodeError,
    Ignore,
    MaxRetriesExceededError,
    NoRoute,
    NotRegistered,
    ProtocolError,
    PublishError,
    QueueFull,
    Reject,
    Retry,
    SerializationError,
    SoftTimeLimitExceeded,
    TaskError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
    WorkerLostError,
    ZqError,
)
from .log import get_task_logger
from .result import AsyncResult, EagerResult
from .result_set import GroupResult, ResultSet
from .routing import Exchange, Queue
from .task import Task, current_task

__version__ = "0.1.0"

__all__ = [
    # the application and its tasks
    "App",
    "Task",
    "current_task",
    "get_task_logger",
    # calling and results
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "ResultSet",
    "Signature",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "signature",
    "states",
    "xmap",
    "xstarmap",
    # routing
    "Exchange",
    "Queue",
    # errors
    "CanvasNotSupported",
    "ChordError",
    "ConfigurationError",
    "ContentDisallowed",
    "DecodeError",
    "Ignore",
    "MaxRetriesExceededError",
    "NoRoute",
    "NotRegistered",
    "ProtocolError",
    "PublishError",
    "QueueFull",
    "Reject",
    "Retry",
    "SerializationError",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
    "ZqError",
]
