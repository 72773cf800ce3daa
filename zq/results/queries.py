"""The results actor's answer to each query (GET, WAIT, FORGET, SNAPSHOT, EVENTS)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .. import protocol, states
from ..protocol import Cmd, Message
from .store import Row
from .stream import Stream
from .table import StateTable
from .waiters import Waiters

logger = logging.getLogger("zq.results")

_MAX_IDS_PER_REQUEST = 10_000
_SNAPSHOT_LIMIT = 10_000
# A client renews its waits every 10 s (zq.client), so a wait never needs to last long;
# one a peer forgets ends within this and frees its place.
_DEFAULT_WAIT_S = 20.0
_MAX_WAIT_S = 30.0


class Refused(Exception):
    """A query answered with an error: it asks for something the results actor refuses."""


Handler = Callable[[bytes, Message], Message | list[Message] | None]


class Queries:
    """One handler per query, over the results actor's table, waiters and stream.
    ``catch_up`` applies the events received so far, so that a query sees them;
    ``received`` takes a client's own events."""

    def __init__(self, table: StateTable, waiters: Waiters, stream: Stream,
                 catch_up: Callable[[], None], received: Callable[[list[Row]], None]):
        self.table = table
        self.waiters = waiters
        self.stream = stream
        self._apply_received = catch_up
        self._received = received
        self.handlers: dict[Cmd, Handler] = {
            Cmd.GET: self._get, Cmd.WAIT: self._wait, Cmd.FORGET: self._forget,
            Cmd.SNAPSHOT: self._snapshot, Cmd.EVENTS: self._events,
        }

    def _get(self, peer: bytes, msg: Message) -> Message:
        ids = _ids(msg)
        self._apply_received()
        found = self.table.lookup(ids)
        rows = [found.get(i) or {"id": i, "state": states.PENDING} for i in ids]
        return Message(Cmd.STATES, {"states": rows, "rid": msg.header.get("rid")})

    def _wait(self, peer: bytes, msg: Message) -> list[Message]:
        """The finished ones of ``ids`` now; each of the others once it finishes, if it
        does within ``timeout_s`` (at most ``_MAX_WAIT_S``) and there is room to wait."""
        ids = _ids(msg)
        self._apply_received()
        timeout_s = msg.header.get("timeout_s", _DEFAULT_WAIT_S)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
                or not timeout_s > 0:
            timeout_s = _DEFAULT_WAIT_S
        deadline = time.time() + min(float(timeout_s), _MAX_WAIT_S)
        found = self.table.lookup(ids)
        ready = []
        refused = 0
        for task_id in ids:
            row = found.get(task_id)
            if row is not None and row["state"] in states.READY_STATES:
                ready.append(row)
            elif not self.waiters.add(task_id, peer, deadline):
                refused += 1
        replies = [Message(Cmd.STATES, {"states": ready})] if ready else []
        if refused:
            replies.append(error(self._no_room(peer, refused, len(ids)), None))
        return replies

    def _no_room(self, peer: bytes, refused: int, asked: int) -> str:
        if self.waiters.held_by(peer) >= self.waiters.per_peer:
            why = (f"this peer already waits for {self.waiters.per_peer} tasks, "
                   f"the most one peer may")
        else:
            why = f"{self.waiters.limit} waits are held, the most the results actor keeps"
        return (f"WAIT refused for {refused} of {asked} ids: {why}; ask again once "
                f"some have finished")

    def _forget(self, peer: bytes, msg: Message) -> Message:
        ids = _ids(msg)
        self._apply_received()
        self.table.forget(ids)
        return Message(Cmd.STATES, {"states": [], "rid": msg.header.get("rid")})

    def _snapshot(self, peer: bytes, msg: Message) -> Message:
        """The rows of ``ids``, or of the unfinished tasks, and the ``seq`` they are
        current to: a subscriber applies the stream's events after that ``seq``."""
        ids = _ids(msg) if msg.header.get("ids") else None
        self._apply_received()
        rows = self.table.snapshot(ids, _SNAPSHOT_LIMIT)
        return Message(Cmd.STATES, {"states": rows, "seq": self.stream.seq,
                                    "rid": msg.header.get("rid")})

    def _events(self, peer: bytes, msg: Message) -> Message:
        """State events from a client (``update_state`` outside a worker): all or none."""
        events = msg.header.get("events")
        good = valid_events(events)
        if not isinstance(events, list) or len(good) != len(events):
            raise Refused("EVENTS needs 'events', a list of valid state events; refused")
        self._received(good)
        return Message(Cmd.STATES, {"states": [], "rid": msg.header.get("rid")})


def _ids(msg: Message) -> list[str]:
    ids = msg.header.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) \
            or len(ids) > _MAX_IDS_PER_REQUEST:
        raise Refused(f"{msg.cmd.value} needs 'ids': a list of at most "
                      f"{_MAX_IDS_PER_REQUEST} task ids")
    return ids


def valid_events(events: Any) -> list[Row]:
    """The events that can be stored; each other one is logged and dropped."""
    if not isinstance(events, list):
        logger.warning("dropping EVENTS without an event list")
        return []
    good = []
    for event in events:
        problem = protocol.event_problem(event)
        if problem:
            logger.warning("dropping event: %s", problem)
        else:
            good.append(event)
    return good


def error(message: str, rid: Any) -> Message:
    msg = protocol.error(message)
    if rid is not None:
        msg.header["rid"] = rid
    return msg
