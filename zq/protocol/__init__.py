"""zq's wire protocol: the one typed contract between its processes.

A message is one ZeroMQ frame::

    b"ZQ1" | command code (1 byte) | header length (4 bytes, big-endian) | header | body

The command is one of :class:`Cmd`, the header a msgpack map (its keys per kind in
:mod:`.headers`) and the body an opaque payload (a task's arguments or a result in its own
content type), possibly empty. :mod:`.frames` builds and reads frames, :mod:`.checks`
validates headers where they enter, :mod:`.build` makes the headers several processes send,
and :mod:`.ids` defines every id format and limit. No other module builds or parses frames
or ids.
"""

from .build import error, exception_data, state_event
from .checks import (
    chord_part_problem,
    event_problem,
    event_types_problem,
    heartbeat_problem,
    identity,
    monitor_batch_problem,
    pool_facts_problem,
    ready_problem,
    registered_problem,
    task_header_problem,
)
from .frames import VERSION, Cmd, Message, decode, drain, pack, recv, send, unpack
from .headers import (
    AcceptedHeader,
    BatchHeader,
    ByeHeader,
    ConfirmHeader,
    ControlHeader,
    DoneRecord,
    ErrorHeader,
    EventsHeader,
    HeartbeatHeader,
    LostHeader,
    MonitorHeader,
    QueryHeader,
    ReadyHeader,
    StateEvent,
    StoredHeader,
    TaskHeader,
    WelcomeHeader,
)
from .ids import (
    EVENT_TYPES,
    EVENTS_TOPIC,
    EXCHANGE_TYPES,
    MAX_CHORD_SIZE,
    RELAY_INDEX,
    TASK_EVENT_TYPES,
    WANT_TOPIC,
    WORKER_EVENT_TYPES,
    MAX_MESSAGE_SIZE,
    MAX_QUEUE_NAME,
    MAX_TASK_ID,
    WATCH_ALL,
    WATCH_HELLO,
    attempt_label,
    copy_id,
    ended_label,
    parse_attempt_label,
    started_attempt,
    tracked_id,
)

__all__ = [
    # frames
    "VERSION", "Cmd", "Message", "decode", "drain", "pack", "recv", "send", "unpack",
    # building and checking headers
    "error", "exception_data", "state_event",
    "chord_part_problem", "event_problem", "event_types_problem", "heartbeat_problem",
    "identity", "monitor_batch_problem", "pool_facts_problem", "ready_problem",
    "registered_problem", "task_header_problem",
    # header types
    "AcceptedHeader", "BatchHeader", "ByeHeader", "ConfirmHeader", "ControlHeader",
    "DoneRecord", "ErrorHeader", "EventsHeader", "HeartbeatHeader", "LostHeader",
    "MonitorHeader", "QueryHeader", "ReadyHeader", "StateEvent", "StoredHeader", "TaskHeader",
    "WelcomeHeader",
    # ids and limits
    "EXCHANGE_TYPES", "MAX_CHORD_SIZE", "MAX_MESSAGE_SIZE", "MAX_QUEUE_NAME", "MAX_TASK_ID", "RELAY_INDEX",
    "WATCH_ALL", "WATCH_HELLO", "EVENT_TYPES", "EVENTS_TOPIC", "TASK_EVENT_TYPES", "WANT_TOPIC",
    "WORKER_EVENT_TYPES",
    "attempt_label", "copy_id", "ended_label", "parse_attempt_label", "started_attempt",
    "tracked_id",
]
