"""The results actor's sockets: binding the endpoints clients know, and bounding what
each peer may make it keep."""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable

import zmq

logger = logging.getLogger("zq.results")

# Answers queued for one peer that does not read them, beyond what the kernel buffers:
# the next ones are dropped (a client asks again: it resends a GET, SNAPSHOT or FORGET
# and renews its waits). A GET answer can be half a megabyte, and with ZeroMQ's
# default of 1,000 one peer sending GETs it never read took 536 MB here.
_QUERY_SNDHWM = 16
# Queries read ahead from one peer: a client has one or two in flight, and a peer that
# sends faster than it is answered waits (its socket fills) instead of having its
# queries pile up here (300 GETs sent at once took 115 MB with ZeroMQ's default).
_QUERY_RCVHWM = 16
# A peer that vanished without closing its connection (a host gone, a network cut) is
# dropped after this much silence, with the answers queued for it.
_PEER_HEARTBEAT_S = 5.0
_PEER_TIMEOUT_S = 30.0
# How long a remembered port is tried again while taken (by a results actor of a killed
# router that is still on its way out) before another is chosen.
BIND_RETRY_S = 5.0
# Memory freed by ZeroMQ's I/O thread and after large queries stays with glibc's
# allocator unless trimmed: 50 peers sending 10,000 WAITs left 35 MB of freed memory in
# the process, 7 MB once trimmed. A trim costs about a millisecond.
TRIM_EVERY_S = 5.0


def _load_malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``, which returns freed memory to the system; elsewhere
    a no-op."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


give_back_freed_memory = _load_malloc_trim()


def bound_peers(sock: zmq.Socket[bytes]) -> None:
    """Bound what the query socket keeps for each peer: its queries read ahead, the
    answers queued for it, and how long it stays after going silent."""
    sock.sndhwm = _QUERY_SNDHWM
    sock.rcvhwm = _QUERY_RCVHWM
    sock.heartbeat_ivl = int(_PEER_HEARTBEAT_S * 1000)
    sock.heartbeat_timeout = int(_PEER_TIMEOUT_S * 1000)


def bind(sock: zmq.Socket[bytes], endpoint: str, give_up: float) -> str:
    """Bind; a remembered port that is taken is tried again until ``give_up`` (a
    monotonic time), then a random port is taken instead.

    Clients and workers reconnect by themselves only to the endpoints they knew, so a new
    port strands them; it is the last resort. (An ipc:// path needs no retry: binding
    replaces a socket file left behind.)
    """
    fixed = endpoint.startswith("tcp://") and not endpoint.endswith(":*")
    while True:
        try:
            sock.bind(endpoint)
            return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        except zmq.ZMQError as exc:
            if not fixed:
                raise
            if exc.errno == zmq.EADDRINUSE and time.monotonic() < give_up:
                time.sleep(0.1)
                continue
            failure = exc
            break
    sock.bind(endpoint.rsplit(":", 1)[0] + ":*")
    bound = str(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    logger.warning("could not bind %s again (%s); bound %s instead: clients that knew "
                   "the old endpoint will not find this one", endpoint, failure, bound)
    return bound
