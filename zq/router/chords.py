"""Chords: a body task held until the tasks of its header (its parts) have ended.

A part names its body and its index in its header (``chord``, ``chord_index``); a body
says how many parts it waits for (``chord_size``). The router counts here the final event
each part ended with, the first one per index, for as long as it holds the body, and
journals it (a ``C`` record) so that a restart counts it again. When the body is released,
and with what, is the core's rule (:meth:`zq.router.core.Core.count_part` and
:meth:`~zq.router.core.Core.release`); this table only remembers what came in and what it
decides.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from .. import states
from ..protocol import RELAY_INDEX

logger = logging.getLogger("zq.router")

# The state a part is counted with when its DONE carried no event (Ignore, ignore_result).
IGNORED = "IGNORED"


class Records(Protocol):
    """What the table writes down (the journal, or a stand-in in tests)."""

    def part(self, body_id: str, index: int, event: Any) -> None: ...


def membership(header: dict[str, Any]) -> tuple[str, int] | None:
    """The chord part a task's header makes it: (body id, index), or None."""
    body_id = header.get("chord")
    if body_id is None:
        return None
    return body_id, header["chord_index"]


def chain_membership(header: dict[str, Any]) -> tuple[str, int] | None:
    """The chord part a task settles only by failing: a link before the last of a chain
    that is a part (``chord_chain``); a success leaves it to the next link."""
    value = header.get("chord_chain")
    if isinstance(value, list) and len(value) == 2:
        return value[0], value[1]
    return None


def waits(header: dict[str, Any]) -> bool:
    """Whether a task is a chord body the router has not released yet (the router sets
    ``chord_results`` or ``chord_error`` on release, so a body it sends on, or journals
    again in a rewrite, is not held a second time)."""
    return ("chord_size" in header and "chord_results" not in header
            and "chord_error" not in header)


def succeeded(event: dict[str, Any]) -> bool:
    return event.get("state") == states.SUCCESS


def chord_error(event: dict[str, Any]) -> dict[str, Any]:
    """What a body is released with when ``event`` is the part that did not succeed."""
    return {"id": event.get("id"), "name": event.get("name"), "state": event.get("state"),
            "exc": event.get("exc")}


class Chord:
    """The parts of one body that ended so far: index -> final event, in the order they
    ended; and the first of them that did not succeed, which decides the chord."""

    __slots__ = ("parts", "failure")

    def __init__(self) -> None:
        self.parts: dict[int, dict[str, Any]] = {}
        self.failure: dict[str, Any] | None = None

    def complete(self, size: int) -> bool:
        return len(self.parts) >= size and all(i in self.parts for i in range(size))

    def release(self, size: int) -> dict[str, Any] | None:
        """The header fields a body of ``size`` parts is released with, or None while it
        waits: the first failure at once, else every result once all are in."""
        if self.failure is not None:
            return {"chord_error": chord_error(self.failure)}
        if self.complete(size):
            return {"chord_results": [[self.parts[i].get("ct"), self.parts[i].get("body")]
                                      for i in range(size)]}
        return None


class Chords:
    """The chords whose bodies the router holds, by body id."""

    def __init__(self, records: Records):
        self.records = records
        self.bodies: dict[str, Chord] = {}

    def __contains__(self, body_id: str) -> bool:
        return body_id in self.bodies

    def get(self, body_id: str) -> Chord | None:
        return self.bodies.get(body_id)

    def record(self, body_id: str, index: int, event: dict[str, Any], size: int | None, *,
               journal: bool = True) -> bool:
        """Count a part's final event (and journal it, unless it is replayed); False when
        it does not count: its index counted already, the chord failed already, or the
        index is past the body's ``size`` (None while no entry of the body says it: a
        task that has not replaced itself yet)."""
        if size is not None and index >= size and index != RELAY_INDEX:
            logger.warning("ignoring part %d of chord %s, which has %d parts", index,
                           body_id, size)
            return False
        chord = self.bodies.get(body_id)
        if chord is None:
            chord = self.bodies[body_id] = Chord()
        elif index in chord.parts or chord.failure is not None:
            logger.debug("ignoring part %d of chord %s: counted already, or the chord "
                         "failed", index, body_id)
            return False
        chord.parts[index] = event
        if chord.failure is None and not succeeded(event):
            chord.failure = event
        if journal:
            self.records.part(body_id, index, event)
        return True

    def forget(self, body_id: str) -> None:
        """The body ended: its parts are of no use any more."""
        self.bodies.pop(body_id, None)
