"""Frames: the message kinds, and the one place frames are built and read.

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

from ..errors import ProtocolError

logger = logging.getLogger("zq.protocol")

VERSION = b"ZQ1"


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
    # router -> actor: these DONEs are recorded (durably, with fsync); the actor forgets
    # their outcomes, and may start its next reserved task
    CONFIRM = "CONFIRM"        # header: {"done": [[tracked id, retries], ...]}
    # results actor -> router: every final event up to this journal sequence is stored
    STORED = "STORED"          # header: {"upto": n}
    # client -> router: a task sent without waiting (a SUBMIT otherwise): its ACCEPTED
    # may wait a moment to travel with others, and is not sent at all when the task's
    # final state reaches this client first (it says as much)
    PUBLISH = "PUBLISH"
    # Celery-shaped events (docs/events.md). client -> router: {"types": [...], "wakeup"}
    # registers a receiver for a while and asks what it missed (answered MONITOR
    # {"events", "clock", "epoch"}); results actor -> router: {"types": [...]}, what its
    # stream's subscribers want; results actor -> subscribers: {"events": [...], "epoch"}
    MONITOR = "MONITOR"


_CODES = {c: bytes([i + 1]) for i, c in enumerate(Cmd)}
_COMMANDS = {code[0]: c for c, code in _CODES.items()}
_LENGTH = struct.Struct(">I")
_PREFIX = len(VERSION) + 1 + _LENGTH.size
_SNDMORE = int(zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)


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
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


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

    Most drains find one message. Whether a second one waits is asked (ZMQ_EVENTS) rather
    than found out by a receive that raises ``zmq.Again``, which costs about twice as
    much; once a second one is there, more usually follow, and reading until
    ``zmq.Again`` is cheaper than asking before each.
    """
    count = 0
    while limit is None or count < limit:
        if count == 1 and not int(sock.getsockopt(_EVENTS)) & _POLLIN:
            return
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
