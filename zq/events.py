"""Celery's events, live: ``app.events.Receiver`` and ``app.events.State``.

    state = app.events.State()
    receiver = app.events.Receiver(handlers={"task-failed": on_failure, "*": state.event})
    receiver.capture(limit=None, timeout=None, wakeup=True)

The router builds the events from what it handles (docs/events.md) and only while a
receiver wants them: a receiver subscribes to the results actor's stream for each type its
handlers name (every type with a ``"*"`` handler), then registers with the router, which
answers with what the receiver would have seen so far (the tasks it holds, the actors
alive) and the event clock that answer is current to. Published events with a clock not
past it are dropped, so a receiver started late misses nothing and sees nothing twice.
"""

from __future__ import annotations

import reprlib
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import zmq

from . import protocol, serialization, states
from .errors import ProtocolError, SerializationError
from .errors import TimeoutError as ZqTimeoutError
from .protocol import EVENTS_TOPIC, WANT_TOPIC, WATCH_HELLO, Cmd
from .utils import Readable

Event = dict[str, Any]
Handler = Callable[[Event], Any]

# Celery's resultrepr_maxsize.
_RESULT_REPR_MAX = 1024
_HELLO_WAIT_S = 10.0
_REGISTER_TIMEOUT_S = 10.0


class _Router(Protocol):
    def call(self, cmd: Cmd, header: dict[str, Any], timeout_s: float) -> dict[str, Any]: ...


class _Results(Protocol):
    def subscriber(self) -> zmq.Socket[Any]: ...


class _Settings(Protocol):
    @property
    def result_content_types(self) -> tuple[str, ...]: ...


class Monitored(Protocol):
    """What the events need of an App."""

    @property
    def settings(self) -> _Settings: ...

    def router_client(self) -> _Router: ...

    def results_client(self) -> _Results: ...


class Events:
    """``app.events``: Celery's ``Receiver`` and ``State``."""

    def __init__(self, app: Monitored):
        self.app = app

    def Receiver(self, channel: Any = None, handlers: Mapping[str, Handler] | None = None,
                 **kwargs: Any) -> Receiver:  # noqa: N802 - Celery's name
        """A receiver calling ``handlers`` by event type (``"*"``: any type). ``channel``
        (Celery's connection) is not needed: the app's router is used."""
        return Receiver(self.app, handlers=handlers, **kwargs)

    def State(self, **kwargs: Any) -> State:  # noqa: N802 - Celery's name
        return State(**kwargs)


class Receiver:
    """Receives the events its handlers name, in order, from the moment it starts: what
    happened before (tasks still held, actors alive) comes first, as the events that
    would have said so."""

    def __init__(self, app: Monitored, handlers: Mapping[str, Handler] | None = None,
                 **kwargs: Any):
        self.app = app
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.should_stop = False
        self._accept = serialization.content_types(app.settings.result_content_types)
        self._repr = reprlib.Repr()
        self._repr.maxstring = self._repr.maxother = _RESULT_REPR_MAX

    @property
    def types(self) -> list[str]:
        """The event types subscribed to: those the handlers name, or all."""
        named = sorted(t for t in self.handlers if t != "*")
        return ["*"] if "*" in self.handlers or not named else named

    def process(self, type_: str, event: Event) -> None:
        handler = self.handlers.get(type_) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    def capture(self, limit: int | None = None, timeout: float | None = None,
                wakeup: bool = True) -> None:
        """Call the handlers for each event until ``limit`` events, ``should_stop``, or
        ``timeout`` seconds without an event (then ``socket.timeout``, as Celery's).
        ``wakeup``: start with a worker-heartbeat of every actor alive."""
        for event in self.itercapture(limit=limit, timeout=timeout, wakeup=wakeup):
            self.process(event["type"], event)

    def itercapture(self, limit: int | None = None, timeout: float | None = None,
                    wakeup: bool = True) -> Iterator[Event]:
        """The events, as :meth:`capture` handles them (handlers are not called)."""
        count = 0
        for event in self._events(timeout, wakeup):
            yield self._received(event)
            count += 1
            if (limit is not None and count >= limit) or self.should_stop:
                return

    def _events(self, timeout: float | None, wakeup: bool) -> Iterator[Event]:
        types = self.types
        sub = self.app.results_client().subscriber()
        try:
            token = WATCH_HELLO + uuid.uuid4().hex.encode()
            for topic in (token, EVENTS_TOPIC, *(WANT_TOPIC + t.encode() for t in types)):
                sub.setsockopt(zmq.SUBSCRIBE, topic)
            readable = Readable(sub)
            # Subscribed before registering: every event built from then on reaches us.
            _await_hello(sub, readable, token)
            clock, epoch, missed = self._register(types, wakeup)
            yield from (event for event in missed if self._wanted(event, types))
            idle_since = time.monotonic()
            while not self.should_stop:
                wait_s = 0.25
                if timeout is not None:
                    left = idle_since + timeout - time.monotonic()
                    if left <= 0:
                        raise socket.timeout("timed out waiting for events")
                    wait_s = min(wait_s, left)
                if not readable.wait(int(wait_s * 1000)):
                    continue
                try:
                    _, msg = protocol.recv(sub, routed=True)
                except ProtocolError:
                    continue
                batch = msg.header.get("events")
                if msg.cmd is not Cmd.MONITOR or not isinstance(batch, list):
                    continue
                if msg.header.get("epoch") != epoch:
                    # The router restarted and its clock began again: start over from
                    # what it holds now.
                    clock, epoch, missed = self._register(types, wakeup)
                    yield from (event for event in missed if self._wanted(event, types))
                    if msg.header.get("epoch") != epoch:
                        continue
                for event in batch:
                    # Events up to the clock of the registration's answer are in it.
                    if (isinstance(event, dict) and isinstance(event.get("clock"), int)
                            and event["clock"] > clock and self._wanted(event, types)):
                        idle_since = time.monotonic()
                        yield event
        finally:
            sub.close(linger=0)

    def _register(self, types: list[str], wakeup: bool) -> tuple[int, Any, list[Event]]:
        reply = self.app.router_client().call(Cmd.MONITOR, {"types": types, "wakeup": wakeup},
                                              _REGISTER_TIMEOUT_S)
        events = reply.get("events")
        return (int(reply.get("clock", 0)), reply.get("epoch"),
                [e for e in events if isinstance(e, dict)] if isinstance(events, list) else [])

    @staticmethod
    def _wanted(event: Event, types: list[str]) -> bool:
        return "*" in types or event.get("type") in types

    def _received(self, event: Event) -> Event:
        """Celery's fields a receiver adds: ``local_received``, and a success's
        ``result`` as the repr of its value."""
        event = dict(event)
        event["local_received"] = time.time()
        if event.get("type") == "task-succeeded" and "body" in event:
            body, ct = event.pop("body"), event.pop("ct", "")
            try:
                value = serialization.loads(body, ct or "", self._accept)
                event["result"] = self._repr.repr(value)
            except SerializationError:
                event["result"] = f"<{len(body)} bytes of {ct}>"
        return event


def _await_hello(sub: zmq.Socket[Any], readable: Readable, token: bytes) -> None:
    deadline = time.monotonic() + _HELLO_WAIT_S
    while time.monotonic() < deadline:
        if readable.wait(100) and sub.recv_multipart()[0] == token:
            return
    raise ZqTimeoutError("the results actor did not confirm the subscription")


# -- State ---------------------------------------------------------------------------------

TASK_EVENT_TO_STATE = {
    "sent": states.PENDING, "received": states.RECEIVED, "started": states.STARTED,
    "failed": states.FAILURE, "retried": states.RETRY, "succeeded": states.SUCCESS,
    "revoked": states.REVOKED, "rejected": states.REJECTED,
}
# Celery's state precedence: a state later in this list happened before one earlier, so
# an event bringing it late only adds its fields.
_PRECEDENCE = [states.SUCCESS, states.FAILURE, None, states.REVOKED, states.STARTED,
               states.RECEIVED, states.REJECTED, states.RETRY, states.PENDING]


def precedence(state: str | None) -> int:
    try:
        return _PRECEDENCE.index(state)
    except ValueError:
        return _PRECEDENCE.index(None)


class Worker:
    """A worker as events describe it: in zq each actor process is one, named
    ``hostname`` (its identity), on ``host``."""

    # Celery's heartbeat expiry: alive while a heartbeat came within freq * this.
    expire_window = 3.0

    def __init__(self, hostname: str, **fields: Any):
        self.hostname = hostname
        self.host: str | None = None
        self.pid: int | None = None
        self.freq = 1.0
        self.heartbeats: list[float] = []
        self.active: int | None = None
        self.processed: int | None = None
        self.loadavg: list[float] | None = None
        self.queues: list[str] = []
        self.sw_ident: str | None = None
        self.sw_ver: str | None = None
        self.sw_sys: str | None = None
        self.offline = False
        self.__dict__.update(fields)

    def event(self, type_: str, timestamp: float | None, local_received: float | None,
              fields: Event) -> None:
        for key in ("pid", "freq", "active", "processed", "loadavg", "host", "queues",
                    "sw_ident", "sw_ver", "sw_sys"):
            if fields.get(key) is not None:
                setattr(self, key, fields[key])
        if type_ == "offline":
            self.offline = True
            self.heartbeats = []
            return
        self.offline = False
        beat = local_received or timestamp
        if beat is not None:
            self.heartbeats = (self.heartbeats + [beat])[-4:]

    @property
    def heartbeat_expires(self) -> float | None:
        if not self.heartbeats:
            return None
        return self.heartbeats[-1] + self.freq * self.expire_window

    @property
    def alive(self) -> bool:
        expires = self.heartbeat_expires
        return not self.offline and expires is not None and time.time() < expires

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    def __repr__(self) -> str:
        return f"<Worker: {self.hostname} ({self.status_string})>"


class Task:
    """A task as events describe it (Celery's ``State.Task``)."""

    def __init__(self, uuid: str, **fields: Any):
        self.uuid = uuid
        self.name: str | None = None
        self.state: str = states.PENDING
        self.hostname: str | None = None
        self.worker: Worker | None = None
        self.queue: str | None = None
        self.retries = 0
        self.result: str | None = None
        self.exception: str | None = None
        self.traceback: str | None = None
        self.runtime: float | None = None
        self.terminated: bool | None = None
        self.expired: bool | None = None
        self.timestamp: float | None = None
        self.sent: float | None = None
        self.received: float | None = None
        self.started: float | None = None
        self.succeeded: float | None = None
        self.failed: float | None = None
        self.retried: float | None = None
        self.revoked: float | None = None
        self.rejected: float | None = None
        self.eta: Any = None
        self.expires: Any = None
        self.root_id: str | None = None
        self.parent_id: str | None = None
        self.clock = 0
        self.__dict__.update(fields)

    def event(self, type_: str, timestamp: float | None, local_received: float | None,
              fields: Event) -> None:
        state = TASK_EVENT_TO_STATE.get(type_)
        if timestamp is not None and type_ in TASK_EVENT_TO_STATE:
            setattr(self, type_, timestamp)
        fields = {k: v for k, v in fields.items()
                  if k not in ("type", "uuid", "local_received", "utcoffset")}
        if (self.state != states.RETRY and state != states.RETRY
                and precedence(state) > precedence(self.state)):
            # This state happened before the current one (it arrived late): keep what
            # it adds, not its state.
            fields = {k: v for k, v in fields.items()
                      if k in ("name", "queue", "eta", "expires", "root_id", "parent_id",
                               "hostname", "host") and getattr(self, k, None) is None}
        elif state is not None:
            fields.update(state=state, timestamp=timestamp)
        self.__dict__.update(fields)

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def __repr__(self) -> str:
        return f"<Task: {self.name}({self.uuid}) {self.state} clock:{self.clock}>"


class State:
    """Tasks and workers kept from events (Celery's ``app.events.State``): feed it with
    :meth:`event`, as a receiver's ``"*"`` handler."""

    def __init__(self, callback: Callable[[State, Event], Any] | None = None,
                 max_workers_in_memory: int = 5000, max_tasks_in_memory: int = 10000):
        self.callback = callback
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.workers: OrderedDict[str, Worker] = OrderedDict()
        self.event_count = 0
        self.task_count = 0

    def event(self, event: Event) -> tuple[Any, str]:
        """Apply one event; returns (the task or worker it changed, what happened)."""
        self.event_count += 1
        group, _, subject = str(event.get("type", "")).partition("-")
        result: tuple[Any, str] = (None, subject)
        if group == "worker":
            result = self._worker_event(subject, event)
        elif group == "task":
            result = self._task_event(subject, event)
        if self.callback is not None:
            self.callback(self, event)
        return result

    def get_or_create_worker(self, hostname: str) -> tuple[Worker, bool]:
        worker = self.workers.get(hostname)
        if worker is not None:
            self.workers.move_to_end(hostname)
            return worker, False
        worker = self.workers[hostname] = Worker(hostname)
        while len(self.workers) > self.max_workers_in_memory:
            self.workers.popitem(last=False)
        return worker, True

    def get_or_create_task(self, task_id: str) -> tuple[Task, bool]:
        task = self.tasks.get(task_id)
        if task is not None:
            return task, False
        task = self.tasks[task_id] = Task(task_id)
        self.task_count += 1
        while len(self.tasks) > self.max_tasks_in_memory:
            self.tasks.popitem(last=False)
        return task, True

    def _worker_event(self, subject: str, event: Event) -> tuple[Worker | None, str]:
        hostname = event.get("hostname")
        if not isinstance(hostname, str):
            return None, subject
        worker, created = self.get_or_create_worker(hostname)
        worker.event(subject, event.get("timestamp"), event.get("local_received"), event)
        return worker, "online" if created and subject != "offline" else subject

    def _task_event(self, subject: str, event: Event) -> tuple[Task | None, str]:
        task_id = event.get("uuid")
        if not isinstance(task_id, str):
            return None, subject
        task, _ = self.get_or_create_task(task_id)
        task.event(subject, event.get("timestamp"), event.get("local_received"), event)
        if isinstance(event.get("clock"), int):
            task.clock = max(task.clock, event["clock"])
        hostname = event.get("hostname")
        if subject in ("received", "started", "succeeded", "failed", "retried") \
                and isinstance(hostname, str) and not hostname.startswith("router@"):
            # As in Celery, a task's event is also a sign of life of its worker.
            worker, _ = self.get_or_create_worker(hostname)
            worker.event("task", event.get("timestamp"), event.get("local_received"),
                         {"pid": event.get("pid"), "host": event.get("host")})
            task.worker = worker
        return task, subject

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        for index, item in enumerate(reversed(self.tasks.items())):
            if limit is not None and index >= limit:
                return
            yield item

    def tasks_by_time(self, limit: int | None = None) -> list[tuple[str, Task]]:
        """The tasks, the latest change first."""
        ordered = sorted(self.tasks.items(), key=lambda item: item[1].timestamp or 0,
                         reverse=True)
        return ordered[:limit] if limit is not None else ordered

    def tasks_by_type(self, name: str, limit: int | None = None) -> list[tuple[str, Task]]:
        return [item for item in self.tasks_by_time() if item[1].name == name][:limit]

    def alive_workers(self) -> list[Worker]:
        return [worker for worker in self.workers.values() if worker.alive]

    def clear(self) -> None:
        self.tasks.clear()
        self.workers.clear()
        self.event_count = self.task_count = 0

    def __repr__(self) -> str:
        return f"<State: events={self.event_count} tasks={self.task_count}>"
