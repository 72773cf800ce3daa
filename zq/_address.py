"""Checking an address before anything binds or connects to it, with a hint that fixes it.

The router binds one; workers and clients connect to it. A mistake in it (no scheme, a
port out of range, an ipc:// path longer than a Unix socket address holds) would
otherwise show up as libzmq's ``Invalid argument`` at best, and at worst as a wait for a
router that can never answer.
"""

from __future__ import annotations

import os

import zmq

from .errors import ConfigurationError

# The longest ipc:// path, in bytes, that a Unix socket address holds (its sun_path less
# the final NUL): 107 on Linux, 103 on the BSDs and macOS.
IPC_PATH_MAX: int = getattr(zmq, "IPC_PATH_MAX_LEN", 0) or 107

_EXAMPLE_PORT = 5555
_HOW = "an address is tcp://HOST:PORT or ipc://PATH"


def check_endpoint(endpoint: str, *, bind: bool = False, room: int = 0) -> str:
    """``endpoint`` itself when zq can use it, else a :class:`ConfigurationError` saying
    what is wrong with it and how to write it.

    ``bind``: the router's own address. Clients and workers must be able to find it, so
    port 0 or ``*`` (a port the OS picks, that nobody else knows) is refused.
    ``room``: bytes an ipc:// path must leave free for what is added to it (the results
    actor binds its endpoints beside the router's, with a suffix).
    """
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ConfigurationError(f"no address given: {_HOW}")
    if endpoint != endpoint.strip():
        raise ConfigurationError(f"{endpoint!r} has spaces around it: did you mean "
                                 f"{endpoint.strip()}?")
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise ConfigurationError(f"{endpoint} is not an address: {_guess(endpoint)}")
    if scheme == "tcp":
        _check_tcp(endpoint, rest, bind)
    elif scheme == "ipc":
        _check_ipc(endpoint, rest, room)
    else:
        raise ConfigurationError(f"{endpoint}: zq talks over tcp:// or ipc://, not "
                                 f"{scheme}:// ({_HOW})")
    return endpoint


def _guess(value: str) -> str:
    """What an address without a scheme most likely meant."""
    if value.isdigit():
        return f"did you mean tcp://127.0.0.1:{value}?"
    host, colon, port = value.rpartition(":")
    if colon and host and (port.isdigit() or port == "*"):
        return f"did you mean tcp://{value}?"
    if "/" in value:
        return f"did you mean ipc://{value}?"
    return _HOW


def _check_tcp(endpoint: str, rest: str, bind: bool) -> None:
    host, colon, port = rest.rpartition(":")
    if not colon or rest.endswith("]"):
        raise ConfigurationError(f"{endpoint} has no port: did you mean "
                                 f"{endpoint}:{_EXAMPLE_PORT}?")
    if not host:
        raise ConfigurationError(f"{endpoint} has no host: did you mean "
                                 f"tcp://{'*' if bind else '127.0.0.1'}:{port}?")
    if host == "*" and not bind:
        raise ConfigurationError(f"{endpoint}: '*' is for binding; connect to the router's "
                                 f"host, such as tcp://127.0.0.1:{port}")
    if port in ("*", "0"):
        if bind:
            raise ConfigurationError(
                f"{endpoint}: port {port} lets the OS pick a port, which clients and workers "
                f"could not find: name one, such as tcp://{host}:{_EXAMPLE_PORT}")
        raise ConfigurationError(f"{endpoint}: no router listens on port {port}: use the "
                                 f"port given to `zq router --bind`")
    if not port.isdigit():
        raise ConfigurationError(f"{endpoint}: the port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise ConfigurationError(f"{endpoint}: port {port} is out of range (1-65535)")


def _check_ipc(endpoint: str, path: str, room: int) -> None:
    if not path:
        raise ConfigurationError(f"{endpoint} has no path: did you mean "
                                 f"ipc:///tmp/zq-router.sock?")
    if path == "*":
        raise ConfigurationError(f"{endpoint} lets libzmq pick a path, which clients and "
                                 f"workers could not find: name one, such as "
                                 f"ipc:///tmp/zq-router.sock")
    size = len(os.fsencode(path))
    if size + room <= IPC_PATH_MAX:
        return
    if room:
        raise ConfigurationError(
            f"{endpoint}: its path is {size} bytes, and with the {room} that the results "
            f"actor's endpoints add to it, longer than the {IPC_PATH_MAX} a Unix socket "
            f"path holds: use a path of at most {IPC_PATH_MAX - room} bytes")
    raise ConfigurationError(f"{endpoint}: its path is {size} bytes, longer than the "
                             f"{IPC_PATH_MAX} a Unix socket path holds: use a shorter path")
