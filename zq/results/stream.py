"""The state stream: every change, numbered, to the topics somebody subscribed to."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ..protocol import (
    EVENT_TYPES,
    EVENTS_TOPIC,
    WANT_TOPIC,
    WATCH_ALL,
    WATCH_HELLO,
    Cmd,
    Message,
)
from .store import Row

logger = logging.getLogger("zq.results")

# A watcher subscribes to HELLO + a token of its own and is answered on that topic,
# which tells it that its subscriptions are in place.
HELLO = WATCH_HELLO


class Stream:
    """What the results actor publishes on its XPUB socket, without the socket.

    Every change gets the next ``seq``; a subscriber that sees a gap, or that joined
    late, asks for a SNAPSHOT (which carries the ``seq`` it is current to) and goes on
    from there. ``epoch`` names this run of the results actor, whose ``seq`` starts at 0.
    """

    def __init__(self, epoch: str | None = None) -> None:
        self.seq = 0
        self.epoch = epoch or uuid.uuid4().hex[:12]
        self._topics: set[bytes] = set()
        # The Celery event types subscribers want ("*": all), from their WANT_TOPIC
        # subscriptions; ``wanted_changed`` until the router has been told.
        self.wanted: frozenset[str] = frozenset()
        self.wanted_changed = False
        self._batch: list[Row] = []

    def subscription(self, frame: bytes) -> tuple[bytes, Message] | None:
        """Note a (un)subscription frame read from XPUB; a hello gets a WELCOME to send.

        XPUB passes on the first subscription to a topic and the last unsubscription,
        so the topics kept are exactly those somebody listens to.
        """
        if not frame:
            return None
        topic = frame[1:]
        if frame[0] == 1:
            if topic.startswith(HELLO):
                return topic, Message(Cmd.WELCOME, {"seq": self.seq, "epoch": self.epoch})
            if topic.startswith(WANT_TOPIC) and not _event_type(topic):
                logger.warning("ignoring a subscription to %r: not an event type (task-sent, "
                               "..., worker-offline, or *)", topic[:80])
                return None
            self._topics.add(topic)
        elif frame[0] == 0:
            self._topics.discard(topic)
        if topic.startswith(WANT_TOPIC):
            wanted = frozenset(kind for kind in map(_event_type, self._topics) if kind)
            if wanted != self.wanted:
                self.wanted, self.wanted_changed = wanted, True
        return None

    @property
    def monitored(self) -> bool:
        """Whether anybody subscribed to the Celery-shaped events."""
        return EVENTS_TOPIC in self._topics

    def monitor(self, events: list[dict[str, Any]], epoch: Any) -> tuple[bytes, Message] | None:
        """A batch of Celery-shaped events from the router, to publish if anybody listens."""
        if not events or not self.monitored:
            return None
        return EVENTS_TOPIC, Message(Cmd.MONITOR, {"events": events, "epoch": epoch})

    def publish(self, row: Row) -> tuple[bytes, Message] | None:
        """Number the change ``row``; the topic and EVENT to send, if anybody listens to
        its task (a watcher of everything gets it in the batch, see ``batch``)."""
        self.seq += 1
        if not self._topics:
            return None
        if WATCH_ALL in self._topics:
            self._batch.append(dict(row, seq=self.seq))
        topic = row["id"].encode()
        if b"" in self._topics or topic in self._topics:
            return topic, Message(Cmd.EVENT, dict(row, seq=self.seq))
        return None

    def batch(self) -> tuple[bytes, Message] | None:
        """The changes published since the last batch, in one EVENT for the watchers of
        every task (WATCH_ALL), if any."""
        if not self._batch:
            return None
        events, self._batch = self._batch, []
        return WATCH_ALL, Message(Cmd.EVENT, {"events": events})


def _event_type(topic: bytes) -> str | None:
    """The event type a WANT_TOPIC subscription names, or None."""
    if not topic.startswith(WANT_TOPIC):
        return None
    kind = topic[len(WANT_TOPIC):].decode("ascii", errors="replace")
    return kind if kind == "*" or kind in EVENT_TYPES else None
