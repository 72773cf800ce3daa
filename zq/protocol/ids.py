"""Identifiers and limits every process agrees on."""

from __future__ import annotations

from typing import Any

# The exchange types the router knows, and the longest queue name it takes.
EXCHANGE_TYPES = ("direct", "topic", "fanout")
MAX_QUEUE_NAME = 255
# The largest task body a router takes (its --max-message-size) unless told otherwise.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
MAX_TASK_ID = 255
# The most tasks one chord's header may have (its body's ``chord_size``).
MAX_CHORD_SIZE = 1_000_000
# The index a replacement's last task reports at as the one part of the task it replaced
# (a relay): past every real chord part's, so a chord body that replaces itself keeps its
# header's parts apart from its replacement's.
RELAY_INDEX = MAX_CHORD_SIZE
# The topic prefix a watcher subscribes to with a token of its own; the results actor
# publishes a hello on it, proving the watcher's earlier subscriptions are in place.
WATCH_HELLO = b"\x00hello:"
# A watcher of every task subscribes to this topic: each batch of changes the results
# actor applies comes as one message (EVENT {"events": [...]}), not one per change.
WATCH_ALL = b"\x00all"

# Celery's event types, as the router builds them (docs/events.md).
TASK_EVENT_TYPES = ("task-sent", "task-received", "task-started", "task-succeeded",
                    "task-failed", "task-retried", "task-revoked", "task-rejected")
WORKER_EVENT_TYPES = ("worker-online", "worker-heartbeat", "worker-offline")
EVENT_TYPES = frozenset(TASK_EVENT_TYPES + WORKER_EVENT_TYPES)
# The topic the results actor publishes those events on, in batches.
EVENTS_TOPIC = b"\x00events"
# A receiver subscribes to WANT_TOPIC + an event type (or "*", every type) on the results
# actor's stream: nothing is published there, but the XPUB socket sees the subscription,
# and the router builds the types somebody subscribed to, and no others.
WANT_TOPIC = b"\x00want:"


def copy_id(task_id: str, queue: str) -> str:
    """The identity of the copy of a task that went to ``queue`` (of several)."""
    return f"{task_id}\x1f{queue}"


def tracked_id(header: dict[str, Any]) -> Any:
    """The id a task message is tracked by: its ``copy_id`` when it is one of several
    copies, else its id."""
    return header.get("copy_id") or header.get("id")


def attempt_label(uid: str, retries: int) -> str:
    """One attempt of a task as a string (tracked id and retries), as the supervisor is
    told which task an actor runs."""
    return f"{uid}\n{retries}"


# Appended to the label of an actor's last task once it ended (see ``started_attempt``).
_ENDED = "\n."


def ended_label(label: str) -> str:
    """The label of an attempt that ran and ended: what an actor leaves for its
    supervisor between tasks, so that the last task it started is always known."""
    return label + _ENDED


def started_attempt(label: str) -> tuple[tuple[str, int], bool] | None:
    """The last attempt an actor started, from its label (:func:`attempt_label`, or
    :func:`ended_label` once it ended), and whether it still runs; None when there is
    none."""
    running = not label.endswith(_ENDED)
    attempt = parse_attempt_label(label if running else label[:-len(_ENDED)])
    return None if attempt is None else (attempt, running)


def parse_attempt_label(label: str) -> tuple[str, int] | None:
    """The (tracked id, retries) of :func:`attempt_label`; None when it is not one."""
    uid, sep, retries = label.partition("\n")
    if not sep or not retries.isdigit():
        return None
    return uid, int(retries)
