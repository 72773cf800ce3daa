"""The router's exchanges and bindings: which queues a task goes to, as AMQP routes it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..protocol import EXCHANGE_TYPES, MAX_QUEUE_NAME


class Bindings:
    """The router's exchanges and what is bound to them.

    The default exchange ``""`` routes a key to the queue of that name, as AMQP's does.
    """

    def __init__(self) -> None:
        self.exchanges: dict[str, tuple[str, list[tuple[str, str]]]] = {}

    def declare(self, decls: Any) -> bool:
        """Add bindings; returns whether anything changed. Raises ValueError when malformed."""
        if not isinstance(decls, list):
            raise ValueError("declarations must be a list")
        changed = False
        for decl in decls:
            if not isinstance(decl, dict) or not all(
                    isinstance(decl.get(k), str) for k in ("queue", "exchange", "type", "key")):
                raise ValueError(f"malformed declaration {decl!r}")
            if decl["type"] not in EXCHANGE_TYPES:
                raise ValueError(f"exchange type {decl['type']!r} is not supported")
            if not decl["queue"] or len(decl["queue"]) > MAX_QUEUE_NAME:
                raise ValueError(f"a queue name must have 1 to {MAX_QUEUE_NAME} characters")
            if not decl["exchange"]:
                continue  # the default exchange needs no bindings
            kind, bound = self.exchanges.setdefault(decl["exchange"], (decl["type"], []))
            if kind != decl["type"]:
                raise ValueError(f"exchange {decl['exchange']!r} is declared as {kind}, "
                                 f"not {decl['type']}")
            binding = (decl["key"], decl["queue"])
            if binding not in bound:
                bound.append(binding)
                changed = True
        return changed

    def route(self, exchange: str, routing_key: str | None) -> list[str]:
        """Every queue a message goes to, as AMQP routes it: each binding that matches
        gives the message to its queue once. Empty when nothing is bound for it."""
        if not exchange:
            return [routing_key] if routing_key else []
        found = self.exchanges.get(exchange)
        if found is None:
            return []
        kind, bound = found
        if kind == "fanout":
            return list(unique(queue for _, queue in bound))
        if routing_key is None:
            return []
        if kind == "direct":
            return list(unique(queue for key, queue in bound if key == routing_key))
        return list(unique(queue for key, queue in bound if topic_matches(key, routing_key)))

    def to_list(self) -> list[dict[str, str]]:
        return [{"queue": q, "exchange": name, "type": kind, "key": key}
                for name, (kind, bound) in self.exchanges.items() for key, q in bound]


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on '.', ``*`` is one word, ``#`` zero or more."""
    return _topic(tuple(pattern.split(".")), tuple(key.split(".")))


def _topic(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return _topic(rest, words[1:])
    return False


def unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
