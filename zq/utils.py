"""Small helpers shared by several modules."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import zmq


def new_id() -> str:
    return str(uuid.uuid4())


def to_timestamp(value: Any, *, relative: bool = False) -> float | None:
    """A unix time from a datetime (naive means UTC) or, with ``relative``, seconds from now."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment.timestamp()
    if isinstance(value, dt.timedelta):
        return time.time() + value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return time.time() + float(value) if relative else float(value)
    raise TypeError(f"expected a datetime or a number of seconds, not {type(value).__name__}")


def from_timestamp(value: float | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)


def endpoint_host(endpoint: str) -> str | None:
    """The host part of a tcp:// endpoint, None for other transports."""
    if not endpoint.startswith("tcp://"):
        return None
    return endpoint[len("tcp://"):].rsplit(":", 1)[0]


def reachable(endpoint: str, via: str) -> str:
    """``endpoint`` with a wildcard host replaced by the host of ``via`` (the router's)."""
    host = endpoint_host(endpoint)
    if host in ("0.0.0.0", "*", "", "[::]"):
        port = endpoint.rsplit(":", 1)[1]
        return f"tcp://{endpoint_host(via) or '127.0.0.1'}:{port}"
    return endpoint


class Reconnections:
    """Tells when a connecting socket's peer came back: a successful handshake after the
    first one. Make it before the socket connects, so that no handshake is missed; poll
    ``socket`` for readability, then ask :meth:`came_back`."""

    def __init__(self, sock: zmq.Socket[Any]):
        self._watched = sock
        self.socket = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._handshakes = 0

    def came_back(self) -> bool:
        """Whether the peer came back since the last call (reads the waiting events)."""
        before = self._handshakes
        while True:
            try:
                self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return self._handshakes > max(before, 1)
            self._handshakes += 1

    def close(self) -> None:
        self._watched.disable_monitor()
        self.socket.close(linger=0)
