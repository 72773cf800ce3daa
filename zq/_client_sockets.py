"""What the router client and the results client share: making a socket, sending within
a deadline, reading without waiting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq

from . import protocol
from .errors import ConfigurationError
from .protocol import Message
from .security import ClientKeys, secure_client

# How long one request waits for its answer before it is sent again.
RESEND_AFTER_S = 2.0


def ms(seconds: float) -> int:
    """A poll timeout: ZeroMQ counts whole milliseconds."""
    return int(seconds * 1000)


def connected(ctx: zmq.Context[Any], kind: int, endpoint: str,
            keys: ClientKeys | None = None,
            before_connect: Callable[[zmq.Socket[Any]], Any] | None = None,
            ) -> zmq.Socket[Any]:
    """A connected socket; ``before_connect`` is given it first (to attach a monitor)."""
    sock: zmq.Socket[Any] = ctx.socket(kind)
    sock.linger = 0
    secure_client(sock, keys)
    if before_connect is not None:
        before_connect(sock)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        raise ConfigurationError(f"cannot connect to {endpoint!r}: {exc}") from exc
    return sock


def readable(sock: zmq.Socket[Any]) -> bool:
    """Whether a message waits on ``sock`` (no poll, no exception)."""
    return bool(int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


def immediate(sock: zmq.Socket[Any]) -> None:
    """Queue messages only on a connection that is up (ZMQ_IMMEDIATE).

    Otherwise a DEALER keeps what is sent while the router is down and delivers it when
    the router comes back, however long after the caller gave up on it. With this option
    a send that cannot go out fails, so the client knows the message never left.
    """
    sock.immediate = True


def send_within(sock: zmq.Socket[Any], msg: Message, timeout_s: float) -> bool:
    """Send unless no peer can take it within ``timeout_s``.

    A DEALER with no peer to take the message (the router down with ``immediate`` set,
    a CURVE handshake refused, a full queue) blocks in send; this waits for room instead,
    within the caller's deadline. False means the message was not queued.
    """
    try:
        protocol.send(sock, msg, flags=zmq.NOBLOCK)
        return True
    except zmq.Again:
        pass
    if not sock.poll(ms(timeout_s), zmq.POLLOUT):
        return False
    try:
        protocol.send(sock, msg, flags=zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True
