"""zq's wire protocol: the message kinds and the one place frames are built and read.

A message is one ZeroMQ frame::

    b"ZQ1" | command code (1 byte) | header length (4 bytes, big-endian) | header | body

The command is one of :class:`Cmd`, the header a msgpack map and the body an opaque
payload (a task's arguments or a result in its own content type), possibly empty. One
frame rather than one per part because every frame sent costs a call into libzmq, and the
router sends several per task. On a ROUTER socket the peer's identity frame comes first, on
a PUB socket the topic; :func:`recv` and :func:`send` deal with both, so that no other
module touches frames.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from .errors import ProtocolError

logger = logging.getLogger("zq.protocol")

VERSION = b"ZQ1"
# The exchange types the router knows, and the longest queue name it takes.
EXCHANGE_TYPES = ("direct", "topic", "fanout")
MAX_QUEUE_NAME = 255
# The largest task body a router takes (its --max-message-size) unless told otherwise.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


class Cmd(str, enum.Enum):
    # client -> router
    SUBMIT = "SUBMIT"          # header: task header; body: serialized (args, kwargs)
    HELLO = "HELLO"            # ask for the results actor's endpoints
    CONTROL = "CONTROL"        # header: {"op": ..., ...}: revoke, rate_limit, stats, purge
    # router -> client
    ACCEPTED = "ACCEPTED"      # header: {"id": task id}
    ERROR = "ERROR"            # header: {"error": class name, "message": text, "id"?: task id}
    WELCOME = "WELCOME"        # header: {"results": {...endpoints}, "epoch": router start id}
    REPLY = "REPLY"            # header: reply to CONTROL
    # actor -> router
    READY = "READY"            # header: {"queues": [...], "credit": n, "host": ..., "pid": ...}
    DONE = "DONE"              # header: {"id": ..., "requeue"?: bool}: credit back, task finished
    HEARTBEAT = "HEARTBEAT"    # header: {} from an actor, {"actors": [...]} from a supervisor
    LOST = "LOST"              # supervisor -> router: {"actor": identity, "reason": ...}
    # router -> actor
    TASK = "TASK"              # header: task header; body: serialized (args, kwargs)
    RESYNC = "RESYNC"          # the router does not know this actor: announce again
    # -> results actor
    EVENTS = "EVENTS"          # header: {"events": [state event, ...]}
    GET = "GET"                # header: {"ids": [...]}
    WAIT = "WAIT"              # header: {"ids": [...], "timeout_s": s}
    FORGET = "FORGET"          # header: {"ids": [...]}
    SNAPSHOT = "SNAPSHOT"      # header: {"ids": [...] or None}
    # results actor ->
    STATES = "STATES"          # header: {"states": [...], "seq"?: n}
    EVENT = "EVENT"            # published: header: one state event with "seq"
    # actor -> router, its last message before a clean exit (recycling, shutdown)
    BYE = "BYE"


_CODES = {c: bytes([i + 1]) for i, c in enumerate(Cmd)}
_COMMANDS = {code[0]: c for c, code in _CODES.items()}
_LENGTH = struct.Struct(">I")
_PREFIX = len(VERSION) + 1 + _LENGTH.size
_SNDMORE = int(zmq.SNDMORE)


@dataclass(slots=True)
class Message:
    cmd: Cmd
    header: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""
    # The header as it arrived; forwarded as-is when the header was not changed.
    raw_header: bytes | None = None

    def encode(self) -> bytes:
        header = self.raw_header if self.raw_header is not None else pack(self.header)
        return b"".join((VERSION, _CODES[self.cmd], _LENGTH.pack(len(header)), header,
                         self.body))


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def decode(frame: bytes) -> Message:
    """Read a message from its frame (without any routing identity or topic)."""
    if len(frame) < _PREFIX:
        raise ProtocolError(f"a message of {len(frame)} bytes is too short to be zq's")
    if frame[:3] != VERSION:
        raise ProtocolError(f"unsupported protocol version {bytes(frame[:3])!r} "
                            f"(this peer speaks {VERSION.decode()})")
    command = _COMMANDS.get(frame[3])
    if command is None:
        raise ProtocolError(f"unknown command code {frame[3]}")
    (length,) = _LENGTH.unpack_from(frame, 4)
    end = _PREFIX + length
    if end > len(frame):
        raise ProtocolError(f"header length {length} runs past the end of the message")
    header = frame[_PREFIX:end]
    try:
        head = unpack(header)
    except Exception as exc:
        raise ProtocolError(f"header is not valid msgpack: {exc}") from None
    if not isinstance(head, dict):
        raise ProtocolError(f"header must be a map, not {type(head).__name__}")
    return Message(command, head, frame[end:], header)


def send(sock: zmq.Socket[Any], msg: Message, identity: bytes | None = None,
         flags: int = 0) -> None:
    """Send ``msg``; on a ROUTER socket to the peer ``identity``, on a PUB under that topic."""
    if identity is not None:
        sock.send(identity, flags | _SNDMORE)
    sock.send(msg.encode(), flags)


def recv(sock: zmq.Socket[Any], flags: int = 0,
         routed: bool = False) -> tuple[bytes | None, Message]:
    """Receive one message; ``routed`` for ROUTER and SUB sockets, whose first frame is the
    peer or the topic.

    Raises :class:`ProtocolError` with ``.identity`` set to the sender, so that a ROUTER can
    answer a malformed message with an error.
    """
    frames = sock.recv_multipart(flags)
    identity = frames[0] if routed and len(frames) > 1 else None
    try:
        if len(frames) != (2 if routed else 1):
            raise ProtocolError(f"expected {'2 frames' if routed else 'one frame'}, "
                                f"got {len(frames)}")
        return identity, decode(frames[-1])
    except ProtocolError as exc:
        exc.identity = identity  # type: ignore[attr-defined]
        raise


def drain(sock: zmq.Socket[Any], limit: int | None = None, routed: bool = False,
          on_error: Callable[[bytes | None, ProtocolError], None] | None = None,
          ) -> Iterator[tuple[bytes | None, Message]]:
    """The messages waiting on ``sock`` (at most ``limit``), without blocking.

    A malformed message goes to ``on_error(sender, exc)`` (by default it is logged) and is
    skipped: one bad message never stops a loop.
    """
    count = 0
    while limit is None or count < limit:
        count += 1
        try:
            yield recv(sock, zmq.NOBLOCK, routed)
        except zmq.Again:
            return
        except ProtocolError as exc:
            if on_error is not None:
                on_error(getattr(exc, "identity", None), exc)
            else:
                logger.warning("dropping a malformed message: %s", exc)


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


def event_problem(event: Any) -> str | None:
    """Why a state event cannot be stored, or None when it can."""
    if not isinstance(event, dict):
        return "an event must be a map"
    if not isinstance(event.get("id"), str) or not event["id"] or len(event["id"]) > 255:
        return "an event needs a task id string of 1 to 255 characters"
    if not isinstance(event.get("state"), str) or not event["state"]:
        return "an event needs a state string"
    if not isinstance(event.get("retries", 0), int) or isinstance(event.get("retries"), bool):
        return "'retries' must be an integer"
    for key, kinds in (("ts", (int, float)), ("name", str), ("ct", str), ("body", bytes),
                       ("exc", dict), ("copy", str)):
        if key in event and not isinstance(event[key], kinds):
            return f"'{key}' has the wrong type"
    if "exc" in event and not all(isinstance(event["exc"].get(k, ""), str)
                                  for k in ("type", "module", "message")):
        return "'exc' needs string type, module and message"
    return None


# -- ids ---------------------------------------------------------------------------------

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


def parse_attempt_label(label: str) -> tuple[str, int] | None:
    """The (tracked id, retries) of :func:`attempt_label`; None when it is not one."""
    uid, sep, retries = label.partition("\n")
    if not sep or not retries.isdigit():
        return None
    return uid, int(retries)


# -- exceptions as data ------------------------------------------------------------------

def exception_data(kind: str, message: str, *, module: str = "zq.errors",
                   args: list[Any] | None = None,
                   traceback: str | None = None) -> dict[str, Any]:
    """An exception as it travels in a state event: its class and module, message, args
    and traceback text. The client rebuilds it (zq._remote.data_to_exception)."""
    return {"type": kind, "module": module, "message": message,
            "args": [message] if args is None else args, "traceback": traceback}


# -- validation where a message enters ----------------------------------------------

def task_header_problem(h: dict[str, Any]) -> str | None:
    """Why a submitted task header cannot be taken, or None when it can."""
    if not isinstance(h.get("id"), str) or not h["id"] or len(h["id"]) > 255:
        return "a task needs an 'id' string of 1 to 255 characters"
    if not isinstance(h.get("task"), str) or not h["task"]:
        return "a task needs a 'task' name string"
    if not isinstance(h.get("ct"), str):
        return "a task needs a 'ct' content type string"
    for key in ("eta", "expires", "time_limit", "soft_time_limit"):
        if key in h and not isinstance(h[key], (int, float)):
            return f"'{key}' must be a number"
    for key in ("retries", "max_redeliveries", "redeliveries"):
        if key in h and (not isinstance(h[key], int) or h[key] < 0):
            return f"'{key}' must be a non-negative integer"
    if "priority" in h and (not isinstance(h["priority"], int) or not 0 <= h["priority"] <= 9):
        return "'priority' must be an integer from 0 to 9"
    if "queue" in h and not (isinstance(h["queue"], str)
                             and len(h["queue"]) <= MAX_QUEUE_NAME):
        return f"'queue' must be a string of at most {MAX_QUEUE_NAME} characters"
    if "copy_id" in h and not (isinstance(h["copy_id"], str) and len(h["copy_id"]) <= 511
                               and h["copy_id"].startswith(h["id"] + "\x1f")
                               and isinstance(h.get("queue"), str) and h["queue"]):
        return ("'copy_id' must be the task id, \\x1f and a queue name (at most 511 "
                "characters), with 'queue' set")
    return None


def ready_problem(queues: Any, credit: Any, holding: Any) -> str | None:
    """Why an actor's READY cannot be taken, or None when it can."""
    if (isinstance(queues, list) and queues and all(isinstance(q, str) for q in queues)
            and isinstance(credit, int) and not isinstance(credit, bool) and credit >= 0
            and isinstance(holding, list)
            and all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
                    and isinstance(x[1], int) for x in holding)):
        return None
    return ("READY needs 'queues' (a list of names), 'credit' (an integer >= 0) and "
            "'holding' (a list of [task id, retries])")
