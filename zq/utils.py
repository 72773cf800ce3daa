"""Small helpers shared by several modules."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import zmq


# Ids are made without a system call each: a prefix of random bits drawn once per process
# (and again in a forked child, and whenever the counter runs out) and a counter. The result
# is shaped as a version-4 UUID (version nibble 4, variant 10xx), so that anything that
# parses a UUID takes it: 74 random bits in the prefix, then a 48-bit counter that starts
# at a random place in the lower half of its range.
_COUNTER_BITS = 48
_COUNTER_END = 1 << _COUNTER_BITS


def _seed_ids() -> tuple[str, Iterator[int]]:
    """Draw a new prefix and counter start; the pair is replaced as one, so that a thread
    never combines one seed's prefix with another's counter."""
    global _ids
    bits = int.from_bytes(os.urandom(16), "big")
    head = f"{bits >> 68:015x}"  # 60 bits: time_low, time_mid, time_hi after the version
    variant = 0x8000 | ((bits >> 54) & 0x3FFF)  # the variant's two bits, then 14 random
    start = (bits >> 7) & ((1 << (_COUNTER_BITS - 1)) - 1)
    _ids = (f"{head[:8]}-{head[8:12]}-4{head[12:]}-{variant:04x}-", itertools.count(start))
    return _ids


_ids = _seed_ids()
os.register_at_fork(after_in_child=_seed_ids)


def new_id() -> str:
    """A new task (or group) id: unique across processes and forks, UUID-shaped."""
    prefix, counter = _ids
    count = next(counter)
    if count >= _COUNTER_END:
        prefix, counter = _seed_ids()
        count = next(counter)
    return f"{prefix}{count:012x}"


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


class Readable:
    """Waits for one socket to have a message to read, with a Poller made once:
    ``Socket.poll`` makes a new Poller on every call."""

    def __init__(self, sock: zmq.Socket[Any]):
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)

    def wait(self, timeout_ms: int) -> bool:
        """Whether a message waits now or arrives within ``timeout_ms``."""
        return bool(self._poller.poll(timeout_ms))


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
