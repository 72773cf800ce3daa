"""The results actor: the last state of every task, kept and streamed.

Sockets:
  * PULL ``ingest``: state events from the router and actor processes (EVENTS).
  * ROUTER ``query``: GET, WAIT, FORGET, SNAPSHOT and EVENTS from clients.
  * XPUB ``pub``: every stored change, topic = task id, with a global ``seq`` and a
    per-task ``version``. A subscription to ``\\x00hello:<token>`` is answered on that
    topic, which tells a watcher its subscriptions are in place.

Events come from the router in batches (it forwards the actors' results with its own
events) and from clients (``update_state`` outside a worker), so they can still arrive out
of order; :func:`zq.states.supersedes` decides which one stands. Each step handles a batch
of messages in one store transaction, then publishes and answers waiters.

SENT, the state of every accepted task, is kept in memory only: the router's journal is
what makes an accepted task durable, and writing every task twice would halve what the
store can take. Every later state is written to the store. Changes are published only
for topics somebody subscribed to (the XPUB socket tells us which).
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from . import protocol, security, states
from ._signals import Wakeup
from .errors import ProtocolError
from .protocol import Cmd, Message

logger = logging.getLogger("zq.results")

_BATCH = 2000
_EXPIRE_EVERY_S = 60.0
_MAX_WAITERS = 1_000_000
_MAX_IDS_PER_REQUEST = 10_000
_SNAPSHOT_LIMIT = 10_000
_TRANSIENT_KEPT = 1_000_000
_FIELDS = ("id", "state", "retries", "name", "ts", "version", "ct", "body", "exc", "meta",
           "copy")


@dataclass(frozen=True)
class ResultsConfig:
    ingest: str
    query: str
    pub: str
    data_dir: Path | None
    backend: str = "sqlite"
    result_expires_s: float = 86400.0
    curve_secret_key: str | None = None
    curve_authorized_dir: str | None = None


class MemoryStore:
    """States in a dict: for tests and for ``--results memory``."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}

    def get_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {i: self._rows[i] for i in ids if i in self._rows}

    def put_many(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._rows[row["id"]] = row

    def delete(self, ids: Iterable[str]) -> None:
        for i in ids:
            self._rows.pop(i, None)

    def expire(self, before_ts: float) -> int:
        old = [i for i, r in self._rows.items()
               if r["state"] in states.READY_STATES and r.get("ts", 0) < before_ts]
        self.delete(old)
        return len(old)

    def unready(self, limit: int) -> list[dict[str, Any]]:
        rows = [r for r in self._rows.values() if r["state"] not in states.READY_STATES]
        return rows[:limit]

    def close(self) -> None:
        pass


class SQLiteStore:
    """States in one SQLite file; each step's changes are one transaction."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process being killed; only an
        # operating-system crash can lose the last transactions.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # An expiry sweep deletes many rows in one transaction; without a limit the WAL
        # file would keep the size of the largest sweep for good.
        self._db.execute("PRAGMA journal_size_limit=8388608")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, state TEXT NOT NULL, "
            "ready INTEGER NOT NULL, ts REAL NOT NULL, row BLOB NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS results_ready_ts ON results (ready, ts)")
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = 50_000

    def _remember(self, row: dict[str, Any]) -> None:
        self._cache[row["id"]] = row
        self._cache.move_to_end(row["id"])
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def get_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        missing = []
        for i in ids:
            row = self._cache.get(i)
            if row is not None:
                found[i] = row
            else:
                missing.append(i)
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for (blob,) in self._db.execute(
                    f"SELECT row FROM results WHERE id IN ({marks})", chunk):  # noqa: S608
                row = msgpack.unpackb(blob, raw=False)
                found[row["id"]] = row
                self._remember(row)
        return found

    def put_many(self, rows: list[dict[str, Any]]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (id, state, ready, ts, row) VALUES (?,?,?,?,?)",
                [(r["id"], r["state"], r["state"] in states.READY_STATES, r.get("ts", 0.0),
                  msgpack.packb(r, use_bin_type=True)) for r in rows])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for row in rows:
            self._remember(row)

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for i in ids:
            self._cache.pop(i, None)
        self._db.executemany("DELETE FROM results WHERE id = ?", [(i,) for i in ids])

    def expire(self, before_ts: float) -> int:
        cursor = self._db.execute("DELETE FROM results WHERE ready = 1 AND ts < ?", (before_ts,))
        if cursor.rowcount:
            self._cache = OrderedDict((k, v) for k, v in self._cache.items()
                                      if not (v["state"] in states.READY_STATES
                                              and v.get("ts", 0) < before_ts))
        return cursor.rowcount

    def unready(self, limit: int) -> list[dict[str, Any]]:
        return [msgpack.unpackb(blob, raw=False) for (blob,) in self._db.execute(
            "SELECT row FROM results WHERE ready = 0 LIMIT ?", (limit,))]

    def close(self) -> None:
        self._db.close()


class ResultsActor:
    def __init__(self, config: ResultsConfig, wakeup: Wakeup | None = None):
        self.config = config
        self.wakeup = wakeup
        self.stopping = False
        self.seq = 0
        self.epoch = uuid.uuid4().hex[:12]
        self._waiters: dict[str, set[bytes]] = {}
        self._transient: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._topics: set[bytes] = set()
        self._waiter_deadlines: list[tuple[float, str, bytes]] = []
        self._next_expire = 0.0

    def setup(self) -> None:
        if self.config.backend == "memory" or self.config.data_dir is None:
            self.store: MemoryStore | SQLiteStore = MemoryStore()
        else:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            self.store = SQLiteStore(self.config.data_dir / "results.sqlite3")
        self.ctx = zmq.Context()
        self.auth = None
        keys = None
        if self.config.curve_secret_key:
            keys = security.server_keys(self.config.curve_secret_key,
                                        self.config.curve_authorized_dir or ".")
            # The router forwards events with the same key pair it serves with.
            self.auth = security.start_authenticator(self.ctx, keys, (keys.public_key,))
        self.ingest = self.ctx.socket(zmq.PULL)
        self.query = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.XPUB)
        for sock in (self.ingest, self.query, self.pub):
            security.secure_server(sock, keys)
        self.query.setsockopt(zmq.ROUTER_MANDATORY, 1)
        for sock in (self.ingest, self.query, self.pub):
            sock.linger = 0
        self.ingest.rcvhwm = 0
        self.pub.sndhwm = 100_000
        self.endpoints = {
            "ingest": _bind(self.ingest, self.config.ingest),
            "query": _bind(self.query, self.config.query),
            "pub": _bind(self.pub, self.config.pub),
        }
        self.poller = zmq.Poller()
        for sock in (self.ingest, self.query, self.pub):
            self.poller.register(sock, zmq.POLLIN)
        if self.wakeup is not None:
            self.poller.register(self.wakeup.fd, zmq.POLLIN)
        logger.info("results actor %s ready at %s", self.epoch, self.endpoints)

    def teardown(self) -> None:
        for sock in (self.ingest, self.query, self.pub):
            sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        self.store.close()

    def run(self) -> None:
        self.setup()
        try:
            while not self.stopping:
                self.step(1.0)
        finally:
            self.teardown()

    def step(self, timeout_s: float) -> None:
        events = dict(self.poller.poll(timeout_s * 1000))
        if self.wakeup is not None and self.wakeup.fd in events:
            self.wakeup.drain()
        changes: list[dict[str, Any]] = []
        if self.pub in events:
            self._on_subscriptions()
        if self.ingest in events:
            for _, msg in protocol.drain(self.ingest, _BATCH):
                if msg.cmd is Cmd.EVENTS:
                    changes.extend(self._events(msg.header.get("events")))
                else:
                    logger.warning("dropping %s on the event socket", msg.cmd.value)
        replies: list[tuple[bytes, Message]] = []
        if self.query in events:
            def refuse(sender: bytes | None, exc: ProtocolError) -> None:
                logger.warning("malformed query: %s", exc)
                if sender is not None:
                    replies.append((sender, protocol.error(str(exc))))

            for identity, msg in protocol.drain(self.query, _BATCH, routed=True,
                                                on_error=refuse):
                assert identity is not None
                try:
                    self._on_query(identity, msg, changes, replies)
                except Exception as exc:  # one bad request never ends the results actor
                    logger.exception("error handling %s", msg.cmd.value)
                    replies.append((identity, _error(f"error handling {msg.cmd.value}: {exc}",
                                                     msg.header.get("rid"))))
        if changes:
            self._apply(changes)
        for identity, reply in replies:
            self._send(identity, reply)
        now = time.time()
        if now >= self._next_expire:
            # Often enough that a short result_expires is kept to within a tenth of it.
            self._next_expire = now + min(_EXPIRE_EVERY_S,
                                          max(1.0, self.config.result_expires_s / 10))
            self._expire(now)

    def _lookup(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Current rows: SENT ones from memory, the rest from the store."""
        ids = list(ids)
        found = {i: self._transient[i] for i in ids if i in self._transient}
        rest = [i for i in ids if i not in found]
        if rest:
            found.update(self.store.get_many(rest))
        return found

    def _publishing(self, task_id: str) -> bool:
        return b"" in self._topics or task_id.encode() in self._topics

    def _events(self, events: Any) -> list[dict[str, Any]]:
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

    def _on_query(self, identity: bytes, msg: Message, changes: list[dict[str, Any]],
                  replies: list[tuple[bytes, Message]]) -> None:
        header = msg.header
        rid = header.get("rid")
        ids = header.get("ids")
        if msg.cmd in (Cmd.GET, Cmd.WAIT, Cmd.FORGET) or (msg.cmd is Cmd.SNAPSHOT and ids):
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) \
                    or len(ids) > _MAX_IDS_PER_REQUEST:
                replies.append((identity, _error(f"{msg.cmd.value} needs 'ids': a list of at "
                                                 f"most {_MAX_IDS_PER_REQUEST} task ids", rid)))
                return
        if msg.cmd is Cmd.GET:
            self._flush_into(changes)
            found = self._lookup(ids)
            rows = [found.get(i) or {"id": i, "state": states.PENDING} for i in ids]
            replies.append((identity, Message(Cmd.STATES, {"states": rows, "rid": rid})))
        elif msg.cmd is Cmd.WAIT:
            self._flush_into(changes)
            timeout_s = header.get("timeout_s", 60.0)
            if not isinstance(timeout_s, (int, float)):
                timeout_s = 60.0
            self._on_wait(identity, ids, float(timeout_s), replies)
        elif msg.cmd is Cmd.FORGET:
            self._flush_into(changes)
            self.store.delete(ids)
            for task_id in ids:
                self._transient.pop(task_id, None)
            replies.append((identity, Message(Cmd.STATES, {"states": [], "rid": rid})))
        elif msg.cmd is Cmd.SNAPSHOT:
            self._flush_into(changes)
            rows = (list(self._lookup(ids).values()) if ids
                    else self.store.unready(_SNAPSHOT_LIMIT)
                    + list(self._transient.values())[-_SNAPSHOT_LIMIT:])
            replies.append((identity, Message(Cmd.STATES,
                                              {"states": rows, "seq": self.seq, "rid": rid})))
        elif msg.cmd is Cmd.EVENTS:
            events = header.get("events")
            good = self._events(events)
            if not isinstance(events, list) or len(good) != len(events):
                replies.append((identity, _error("EVENTS needs 'events', a list of valid "
                                                 "state events; refused", rid)))
                return
            changes.extend(good)
            replies.append((identity, Message(Cmd.STATES, {"states": [], "rid": rid})))
        else:
            logger.warning("unexpected %s on the query socket", msg.cmd.value)
            replies.append((identity, _error(f"the results actor does not take "
                                             f"{msg.cmd.value}", rid)))

    def _flush_into(self, changes: list[dict[str, Any]]) -> None:
        # A query must see every change received before it.
        if changes:
            self._apply(changes)
            changes.clear()

    def _on_wait(self, identity: bytes, ids: list[str], timeout_s: float,
                 replies: list[tuple[bytes, Message]]) -> None:
        found = self._lookup(ids)
        ready = []
        deadline = time.time() + min(timeout_s, 3600.0)
        for task_id in ids:
            row = found.get(task_id)
            if row is not None and row["state"] in states.READY_STATES:
                ready.append(row)
            elif len(self._waiter_deadlines) < _MAX_WAITERS:
                self._waiters.setdefault(task_id, set()).add(identity)
                self._waiter_deadlines.append((deadline, task_id, identity))
        if ready:
            replies.append((identity, Message(Cmd.STATES, {"states": ready})))

    def _apply(self, events: list[dict[str, Any]]) -> None:
        now = time.time()
        current = self._lookup({e["id"] for e in events})
        changed: list[dict[str, Any]] = []
        durable: dict[str, dict[str, Any]] = {}
        for event in events:
            old = current.get(event["id"])
            retries = event.get("retries", 0)
            if old is not None and not states.supersedes(
                    event["state"], retries, old["state"], old.get("retries", 0)):
                continue
            if old is not None and old["state"] in states.READY_STATES and old.get("copy") \
                    and event.get("copy") != old["copy"]:
                continue  # a task in several queues: the first copy to end stands
            row = {k: event[k] for k in _FIELDS if k in event}
            row.setdefault("ts", now)
            row["retries"] = retries
            if old is not None and "name" not in row and old.get("name"):
                row["name"] = old["name"]
            row["version"] = (old.get("version", 0) if old else 0) + 1
            current[event["id"]] = row
            changed.append(row)
            if row["state"] == states.SENT:
                self._remember_sent(row)
            else:
                self._transient.pop(row["id"], None)
                durable[row["id"]] = row  # the last change of a batch is the one written
        if not changed:
            return
        if durable:
            self._store(list(durable.values()))
        ready_for: dict[bytes, list[dict[str, Any]]] = {}
        for row in changed:
            self.seq += 1
            if self._topics and self._publishing(row["id"]):
                try:
                    protocol.send(self.pub, Message(Cmd.EVENT, dict(row, seq=self.seq)),
                                  identity=row["id"].encode(), flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass  # a slow subscriber; it sees the version gap and asks
            if row["state"] in states.READY_STATES:
                for identity in self._waiters.pop(row["id"], ()):
                    ready_for.setdefault(identity, []).append(row)
        for identity, rows in ready_for.items():
            self._send(identity, Message(Cmd.STATES, {"states": rows}))

    def _store(self, rows: list[dict[str, Any]]) -> None:
        try:
            self.store.put_many(rows)
        except Exception:
            # Should a row the validation let through still be refused, keep the others.
            logger.exception("storing a batch of %d failed; storing one by one", len(rows))
            for row in rows:
                try:
                    self.store.put_many([row])
                except Exception as exc:
                    logger.error("dropping the state of %s: %s", row.get("id"), exc)

    def _remember_sent(self, row: dict[str, Any]) -> None:
        self._transient[row["id"]] = row
        if len(self._transient) > _TRANSIENT_KEPT:
            self._transient.popitem(last=False)

    def _send(self, identity: bytes, msg: Message) -> None:
        try:
            protocol.send(self.query, msg, identity=identity, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            logger.debug("could not answer %r: %s", identity, exc)

    def _on_subscriptions(self) -> None:
        """Track which topics have subscribers; answer a watcher's hello on its own topic.

        XPUB passes on the first subscription to a topic and the last unsubscription, so
        the set below is exactly the topics somebody listens to.
        """
        while True:
            try:
                frame = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not frame:
                continue
            topic = frame[1:]
            if frame[0] == 1:
                if topic.startswith(b"\x00hello:"):
                    protocol.send(self.pub, Message(Cmd.WELCOME, {"seq": self.seq,
                                                                   "epoch": self.epoch}),
                                  identity=topic, flags=zmq.NOBLOCK)
                else:
                    self._topics.add(topic)
            elif frame[0] == 0:
                self._topics.discard(topic)

    def _expire(self, now: float) -> None:
        removed = self.store.expire(now - self.config.result_expires_s)
        if removed:
            logger.info("expired %d results", removed)
        live = [(d, i, w) for d, i, w in self._waiter_deadlines if d > now]
        if len(live) != len(self._waiter_deadlines):
            self._waiter_deadlines = live
            waiters: dict[str, set[bytes]] = {}
            for _, task_id, identity in live:
                if identity in self._waiters.get(task_id, ()):
                    waiters.setdefault(task_id, set()).add(identity)
            self._waiters = waiters


def _error(message: str, rid: Any) -> Message:
    msg = protocol.error(message)
    if rid is not None:
        msg.header["rid"] = rid
    return msg


def _bind(sock: zmq.Socket[Any], endpoint: str) -> str:
    """Bind, falling back to a random port when a remembered one is taken."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError:
        if not endpoint.startswith("tcp://") or endpoint.endswith(":*"):
            raise
        endpoint = endpoint.rsplit(":", 1)[0] + ":*"
        sock.bind(endpoint)
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


def main(config: ResultsConfig, conn: Any, log_level: str = "INFO") -> None:
    """Entry point of the results actor process: binds, reports its endpoints, runs."""
    from .log import setup_logging

    setup_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    actor = ResultsActor(config, Wakeup())

    def stop(signum: int, frame: Any) -> None:
        actor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    actor.setup()
    conn.send(actor.endpoints)
    conn.close()
    try:
        while not actor.stopping:
            actor.step(1.0)
    finally:
        actor.teardown()
        logger.info("results actor %d stopped", os.getpid())
