"""The state stream: every change, numbered, to the topics somebody subscribed to."""

from __future__ import annotations

import uuid

from ..protocol import WATCH_HELLO, Cmd, Message
from .store import Row

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
            self._topics.add(topic)
        elif frame[0] == 0:
            self._topics.discard(topic)
        return None

    def publish(self, row: Row) -> tuple[bytes, Message] | None:
        """Number the change ``row``; the topic and EVENT to send, if anybody listens."""
        self.seq += 1
        if not self._topics:
            return None
        topic = row["id"].encode()
        if b"" in self._topics or topic in self._topics:
            return topic, Message(Cmd.EVENT, dict(row, seq=self.seq))
        return None
