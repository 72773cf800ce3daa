"""Running one task message: decode it, find its task, run it, and say what to send.

Nothing here touches a socket. What a task reports while it runs (STARTED, a custom state,
a RETRY that a FAILURE then replaces) goes out at once through ``emit``: subscribers see it
while the task still runs. What follows the run is returned for the actor to send: the DONE
record, which carries the final state event, the next link of a chain, and the FAILURE of
links that will never run.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import protocol, serialization, states
from .._remote import exception_to_data
from ..app import App
from ..canvas import Signature
from ..errors import NotRegistered, SerializationError
from ..protocol import Message, attempt_label, exception_data, tracked_id
from ..task import Request, Task
from ..trace import IGNORED, Outcome, trace

logger = logging.getLogger("zq.actor")

Event = dict[str, Any]
"""One state change of one task, as ``protocol.state_event`` builds it."""


class SharedFloat(Protocol):
    """A float shared with the supervisor (``multiprocessing`` ``Value("d")``)."""

    value: float


class SharedBytes(Protocol):
    """Bytes shared with the supervisor (``multiprocessing`` ``Array("c")``)."""

    value: bytes


@dataclass(frozen=True)
class NextTask:
    """A chain's next link, to be sent (``App.send_task``) with this link's result."""

    name: str
    args: Sequence[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]


@dataclass(frozen=True)
class Executed:
    """What one task message left to send, in this order: ``events``, ``next_task``,
    then ``done`` (the DONE record, with the final state event when there is one)."""

    done: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    next_task: NextTask | None = None


def done_record(header: dict[str, Any], event: Event | None = None, *,
                requeue: bool = False, started: bool = True) -> dict[str, Any]:
    """The DONE record of a task: the router tracks a copy of a task routed to several
    queues by its copy_id, and frees or requeues what it recorded as given out."""
    done: dict[str, Any] = {"id": tracked_id(header), "retries": header.get("retries", 0)}
    if requeue:
        done["requeue"] = True
        done["started"] = started
    if event is not None:
        if header.get("copy_id"):
            # Which copy ended: the results keep the first copy's end (zq.results).
            event.setdefault("copy", header["copy_id"])
        done["event"] = event
    return done


def revoked_record(header: dict[str, Any]) -> dict[str, Any]:
    """The DONE record of a task revoked before it started: reported REVOKED."""
    event = protocol.state_event(
        header["id"], states.REVOKED, retries=header.get("retries", 0),
        name=header.get("task"), ts=time.time(), exc=exception_data(
            "TaskRevokedError", f"task {header['id']} revoked", args=["revoked"]))
    return done_record(header, event)


class Executor:
    """Runs the task messages of one actor process, one at a time.

    ``deadline`` and ``current`` are shared with the supervisor: when the running task's
    hard time limit passes (``time.monotonic()``, 0 for none), past which the supervisor
    kills the process; and the "uid\\nretries" label of the running task (uid: its id, or
    a copy's copy_id), so that the supervisor can tell a restarted router what this actor
    holds while the task keeps it busy.
    """

    def __init__(self, app: App, *, app_path: str, emit: Callable[[Event], None],
                 time_limit_s: float | None = None, soft_time_limit_s: float | None = None,
                 deadline: SharedFloat | None = None, current: SharedBytes | None = None):
        self.app = app
        self.app_path = app_path
        self.time_limit_s = time_limit_s
        self.soft_time_limit_s = soft_time_limit_s
        self.deadline = deadline
        self.current = current
        self.hostname = socket.gethostname()
        self.accept = serialization.content_types(app.settings.accept_content)
        self._emit = emit
        self._final: Event | None = None
        # (task id, copy_id) of the running task when it is a copy; its events say so.
        self._copy: tuple[Any, str] | None = None

    def emit(self, event: Event) -> None:
        """Send a state change now (STARTED, a custom state): the app's state sink."""
        self._emit(self._tagged(event))

    def _tagged(self, event: Event) -> Event:
        if self._copy is not None and event.get("id") == self._copy[0]:
            event.setdefault("copy", self._copy[1])
        return event

    def execute(self, msg: Message) -> Executed:
        header = msg.header
        self._final = None
        self._copy = (header.get("id"), header["copy_id"]) if header.get("copy_id") else None
        try:
            task = self._task(header.get("task", ""))
            args, kwargs = self._arguments(header, msg.body)
            request = self._request(task, header, args, kwargs)
            if task.option("track_started", "task_track_started") and not request.ignore_result:
                self.emit(protocol.state_event(request.id or "", states.STARTED,
                                               retries=request.retries, name=task.name,
                                               pid=os.getpid(), hostname=self.hostname))
            with self._limits(header, request):
                outcome = trace(task, request, args, kwargs,
                                report=lambda o: self._report(task, request, o))
            executed = self._follow_chain(header, outcome)
            requeue = outcome.state == states.REJECTED and outcome.requeue
            if requeue and not header.get("acks_late"):
                logger.warning("task %s[%s] asked to be requeued, but it was acknowledged on "
                               "receipt (not acks_late): dropped", task.name, request.id)
                requeue = False
            if outcome.state == states.REJECTED and not requeue:
                self._final = self._tagged(protocol.state_event(
                    request.id or "", states.REJECTED, retries=request.retries,
                    name=task.name, ts=time.time(),
                    exc=exception_to_data(outcome.retval, outcome.traceback)))
            return Executed(done_record(header, self._take_final(), requeue=requeue),
                            executed.events, executed.next_task)
        except (Exception, SystemExit) as exc:
            # sys.exit() in a task fails the task; it does not end the actor.
            return Executed(self.cannot_run(header, exc, quiet=isinstance(exc, SystemExit)))

    def cannot_run(self, header: dict[str, Any], exc: BaseException, *,
                   quiet: bool = False) -> dict[str, Any]:
        """The DONE record of a task that failed outside its own code: an unknown name,
        arguments that will not decode, a next link that cannot be sent."""
        if not quiet:
            logger.error("task %s[%s] cannot run: %s", header.get("task"), header.get("id"), exc)
        self._final = None
        event = protocol.state_event(
            str(header.get("id", "")), states.FAILURE, retries=header.get("retries", 0),
            name=header.get("task"), exc=exception_to_data(exc), ts=time.time())
        return done_record(header, event)

    def _take_final(self) -> Event | None:
        event, self._final = self._final, None
        return event

    def _task(self, name: str) -> Task:
        task = self.app.tasks.get(name)
        if task is None:
            raise NotRegistered(f"Received unregistered task of type {name!r}: the worker "
                                f"running app {self.app_path!r} has no task of that name")
        return task

    @contextmanager
    def _limits(self, header: dict[str, Any], request: Request) -> Iterator[None]:
        """The soft limit as SIGALRM in this process, the hard one as the deadline the
        supervisor watches, and the running task's label for the supervisor."""
        soft = request.soft_time_limit or self.soft_time_limit_s
        hard = request.time_limit or self.time_limit_s
        try:
            if self.current is not None:
                self.current.value = attempt_label(tracked_id(header), request.retries).encode()
            if soft:
                signal.setitimer(signal.ITIMER_REAL, soft)
            if hard and self.deadline is not None:
                self.deadline.value = time.monotonic() + hard
            yield
        finally:
            if soft:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if hard and self.deadline is not None:
                self.deadline.value = 0.0
            if self.current is not None:
                self.current.value = b""

    def _follow_chain(self, header: dict[str, Any], outcome: Outcome) -> Executed:
        """The next link with this result, or the FAILURE of the links that will never run.

        Only ``events`` and ``next_task`` of the answer mean anything.
        """
        links = header.get("chain")
        if not links:
            return Executed({})
        if outcome.state == states.SUCCESS:
            nxt = Signature.from_dict(links[0], app=self.app)
            options = dict(nxt.options)
            if len(links) > 1:
                options["chain"] = links[1:]
            args = nxt.args if nxt.immutable else (outcome.retval, *nxt.args)
            return Executed({}, next_task=NextTask(nxt.task, args, nxt.kwargs, options))
        events = []
        if outcome.state == states.FAILURE:
            data = exception_to_data(outcome.retval, outcome.traceback)
            for link in links:
                link_id = link.get("options", {}).get("task_id")
                if link_id:
                    events.append(self._tagged(protocol.state_event(
                        link_id, states.FAILURE, name=link.get("task"), exc=data)))
        return Executed({}, events)

    def _arguments(self, header: dict[str, Any], body: bytes) -> tuple[list[Any], dict[str, Any]]:
        payload = serialization.loads(body, header.get("ct", ""), self.accept)
        if (not isinstance(payload, list) or len(payload) != 2
                or not isinstance(payload[0], list) or not isinstance(payload[1], dict)):
            raise SerializationError("task body must be [args list, kwargs map]")
        return payload[0], payload[1]

    def _request(self, task: Task, h: dict[str, Any], args: list[Any],
                 kwargs: dict[str, Any]) -> Request:
        ignore = h.get("ignore_result")
        if ignore is None:
            ignore = task.option("ignore_result", "task_ignore_result")
        return Request(
            id=h["id"], task=h["task"], args=args, kwargs=kwargs, retries=h.get("retries", 0),
            eta=h.get("eta"), expires=h.get("expires"), hostname=self.hostname,
            delivery_info={"exchange": h.get("exchange", ""), "routing_key": h.get("rk"),
                           "queue": h.get("queue"), "priority": h.get("priority"),
                           "redelivered": bool(h.get("redelivered"))},
            is_eager=False, called_directly=False, root_id=h.get("root_id") or h["id"],
            parent_id=h.get("parent_id"), group=h.get("group_id"),
            headers=h.get("headers") or {},
            ignore_result=bool(ignore), time_limit=h.get("time_limit"),
            soft_time_limit=h.get("soft_time_limit"), content_type=h.get("ct"),
            acks_late=bool(h.get("acks_late")), copy_id=h.get("copy_id"))

    def _report(self, task: Task, request: Request, outcome: Outcome) -> None:
        """Keep the outcome's state event as the final one; send the one it replaces."""
        if outcome.state == IGNORED or outcome.state == states.REJECTED:
            return
        task_id = request.id or ""
        if outcome.state == states.SUCCESS:
            if request.ignore_result:
                return
            content_type, body = serialization.dumps(outcome.retval,
                                                     self.app.settings.result_serializer)
            event = protocol.state_event(task_id, states.SUCCESS, retries=request.retries,
                                         name=task.name, content_type=content_type, body=body)
        else:
            if request.ignore_result and outcome.state == states.RETRY:
                return
            data = exception_to_data(outcome.retval, outcome.traceback)
            event = protocol.state_event(task_id, outcome.state, retries=request.retries,
                                         name=task.name, exc=data)
        event["ts"] = time.time()
        # The final state travels with DONE; anything reported before it goes now.
        if self._final is not None:
            self.emit(self._final)
        self._final = event
