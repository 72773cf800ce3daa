"""Watching task states: the current state of what is watched, then every change in order.

A watcher subscribes to its topics, then to a hello topic of its own that the results
actor answers: that answer proves the earlier subscriptions are in place, so a snapshot
taken after it, plus every published change with a larger ``seq``, misses nothing. A gap
in a task's versions (a change dropped at the publisher's high-water mark) is filled by
asking for the task's current state.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Protocol

import zmq

from . import protocol
from .errors import ProtocolError
from .errors import TimeoutError as ZqTimeoutError
from .protocol import Cmd
from .utils import Readable

logger = logging.getLogger("zq.client")

# Per-task versions a watcher remembers, to tell a gap from a change seen already.
_WATCH_MEMORY = 100_000


class Watched(Protocol):
    """What a watcher needs of the results client."""

    def subscriber(self) -> zmq.Socket[Any]: ...

    def snapshot(self, ids: list[str] | None, timeout_s: float = ...) -> dict[str, Any]: ...

    def get(self, ids: list[str], timeout_s: float = ...) -> list[dict[str, Any]]: ...


def watch(results: Watched, ids: list[str] | None, timeout_s: float | None = None,
          ) -> Iterator[dict[str, Any]]:
    """Yield the current state of what is watched, then every change in order."""
    sub = results.subscriber()
    try:
        token = protocol.WATCH_HELLO + uuid.uuid4().hex.encode()
        sub.setsockopt(zmq.SUBSCRIBE, token)
        # Every task's changes come in batches on WATCH_ALL; a task's own on its id.
        for topic in ([i.encode() for i in ids] if ids else [protocol.WATCH_ALL]):
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        # The hello on our own topic proves every subscription above is in place, so
        # nothing published after the snapshot below can be missed.
        readable = Readable(sub)
        _await_hello(sub, readable, token, deadline=time.monotonic() + 10.0)
        snap = results.snapshot(ids)
        last_seq = snap["seq"]
        versions: OrderedDict[str, int] = OrderedDict()
        for meta in snap["states"]:
            versions[meta["id"]] = meta.get("version", 0)
            yield meta
        yield from _stream(sub, readable, last_seq, versions, results, timeout_s)
    finally:
        sub.close(linger=0)


def _await_hello(sub: zmq.Socket[Any], readable: Readable, token: bytes,
                 deadline: float) -> None:
    while time.monotonic() < deadline:
        if readable.wait(100):
            frames = sub.recv_multipart()
            if frames[0] == token:
                return
    raise ZqTimeoutError("the results actor did not confirm the subscription")


def _stream(sub: zmq.Socket[Any], readable: Readable, last_seq: int,
            versions: OrderedDict[str, int], results: Watched, timeout_s: float | None,
            ) -> Iterator[dict[str, Any]]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        wait_s = 1.0 if deadline is None else deadline - time.monotonic()
        if wait_s <= 0:
            return
        if not readable.wait(max(0, int(wait_s * 1000))):
            continue
        try:
            _, msg = protocol.recv(sub, routed=True)
        except ProtocolError as exc:
            logger.warning("dropping malformed published message: %s", exc)
            continue
        if msg.cmd is not Cmd.EVENT:
            continue
        batch = msg.header.get("events")
        for event in batch if isinstance(batch, list) else [msg.header]:
            if isinstance(event, dict) and event.get("seq", 0) > last_seq:
                yield from _change(event, versions, results)


def _change(event: dict[str, Any], versions: OrderedDict[str, int], results: Watched,
            ) -> Iterator[dict[str, Any]]:
    """One published change, unless seen already; what was missed before it, if a gap in
    the task's versions shows some."""
    task_id = event.get("id")
    if not isinstance(task_id, str):
        return
    known = versions.get(task_id, 0)
    version = event.get("version", 0)
    if version <= known:
        return
    if known and version > known + 1:
        # Dropped under load (the PUB high-water mark): fetch what we missed.
        for meta in results.get([task_id]):
            if meta.get("version", 0) > known:
                versions[task_id] = meta.get("version", 0)
                yield meta
        return
    versions[task_id] = version
    versions.move_to_end(task_id)
    if len(versions) > _WATCH_MEMORY:
        versions.popitem(last=False)
    yield event


def describe(event: dict[str, Any]) -> str:
    """One readable line for one change: local time, state, task, and what it holds.

    ``2026-12-02 15:31:02.123  SUCCESS  tasks.add[3f2a…]  retries=1  5``
    """
    ts = event.get("ts")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
            if isinstance(ts, (int, float)) else "-" * 23)
    parts = [when, f"{event.get('state', '?'):<8}",
             f"{event.get('name') or '?'}[{event.get('id')}]"]
    if event.get("retries"):
        parts.append(f"retries={event['retries']}")
    exc = event.get("exc")
    if isinstance(exc, dict):
        parts.append(f"{exc.get('type')}: {exc.get('message')}")
    elif event.get("info") is not None:
        parts.append(_short(repr(event["info"])))
    return "  ".join(parts)


def _short(text: str, limit: int = 200) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 1] + "…"
