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
from .._remote import data_to_exception, exception_to_data
from ..app import App
from ..canvas import FollowUp, follow
from ..errors import ChordError, NotRegistered, SerializationError
from ..protocol import Message, attempt_label, ended_label, exception_data, tracked_id
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
class Executed:
    """What one task message left to send, in this order: ``events``, ``sends`` (the
    next link of a chain, ``link`` callbacks, errbacks sent as tasks), then ``done`` (the
    DONE record, with the final state event when there is one)."""

    done: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    sends: list[FollowUp] = field(default_factory=list)


def done_record(header: dict[str, Any], event: Event | None = None, *,
                requeue: bool = False, started: bool = True, replaced: bool = False,
                chord: list[Any] | None = None) -> dict[str, Any]:
    """The DONE record of a task: the router tracks a copy of a task routed to several
    queues by its copy_id, and frees or requeues what it recorded as given out.

    ``replaced``: the task's result is its replacement's, which the router relays.
    ``chord``: the chord part ([body id, index]) this outcome settles, where it is not
    the task's own (a chain in a chord's header that failed before its last link)."""
    done: dict[str, Any] = {"id": tracked_id(header), "retries": header.get("retries", 0)}
    if requeue:
        done["requeue"] = True
        done["started"] = started
    if replaced:
        done["replaced"] = True
    if chord is not None:
        done["chord"] = chord
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
            if "chord_results" in header and not header.get("chord_immutable"):
                args = [self._chord_results(header["chord_results"]), *args]
            request = self._request(task, header, args, kwargs)
            if isinstance(header.get("chord_error"), dict):
                outcome = self._chord_failed(task, request, header["chord_error"])
            else:
                outcome = self._run(task, header, request, args, kwargs)
            follow = self._follow(request, outcome)
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
            replaced = outcome.state == IGNORED and request.replaced
            done = done_record(header, self._take_final(), requeue=requeue,
                               replaced=replaced, chord=follow.done.get("chord"))
            return Executed(done, follow.events, follow.sends)
        except (Exception, SystemExit) as exc:
            # sys.exit() in a task fails the task; it does not end the actor.
            return Executed(self.cannot_run(header, exc, quiet=isinstance(exc, SystemExit)))

    def _run(self, task: Task, header: dict[str, Any], request: Request, args: list[Any],
             kwargs: dict[str, Any]) -> Outcome:
        tracked = task.option("track_started", "task_track_started") \
            and not request.ignore_result
        if tracked or self.app.settings.worker_send_task_events:
            started = protocol.state_event(request.id or "", states.STARTED,
                                           retries=request.retries, name=task.name,
                                           pid=os.getpid(), hostname=self.hostname)
            if not tracked:
                # For the task-started event only (-E): the router does not store it.
                started["event_only"] = True
            self.emit(started)
        with self._limits(header, request):
            return trace(task, request, args, kwargs,
                         report=lambda o: self._report(task, request, o))

    def _chord_results(self, parts: Any) -> list[Any]:
        """A chord's header results, as the router collected them: ``[ct, body]`` each."""
        if not isinstance(parts, list):
            raise SerializationError("'chord_results' must be a list of [ct, body]")
        accept = serialization.content_types(self.app.settings.result_content_types)
        values = []
        for part in parts:
            if not (isinstance(part, list) and len(part) == 2):
                raise SerializationError("'chord_results' must be a list of [ct, body]")
            ct, body = part
            values.append(None if body is None else serialization.loads(body, ct or "", accept))
        return values

    def _chord_failed(self, task: Task, request: Request, error: dict[str, Any]) -> Outcome:
        """The body of a chord one of whose header tasks did not succeed: it does not run,
        and fails with ChordError naming that task."""
        culprit = data_to_exception(error["exc"]) if isinstance(error.get("exc"), dict) \
            else None
        what = f"{culprit!r}" if culprit is not None else str(error.get("state"))
        exc = ChordError(f"Dependency {error.get('id')} raised {what}")
        outcome = Outcome(states.FAILURE, exc, f"{type(exc).__name__}: {exc}")
        self._report(task, request, outcome)
        logger.warning("chord body %s[%s] not run: %s", task.name, request.id, exc)
        return outcome

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
        label = attempt_label(tracked_id(header), request.retries)
        try:
            if self.current is not None:
                self.current.value = label.encode()
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
                # Still the last task started: if this process dies before its DONE
                # reaches the router, the router knows it ended and what came after it
                # never started.
                self.current.value = ended_label(label).encode()

    def _follow(self, request: Request, outcome: Outcome) -> Executed:
        """What follows the outcome: on success the next link of the chain and the
        ``link`` callbacks; on failure the errbacks (those taking the request are called
        here and now), the FAILURE of the chain's links that will never run, and the chord
        part those links were to settle. Only ``events``, ``sends`` and ``done["chord"]``
        of the answer mean anything."""
        if outcome.state == states.SUCCESS:
            nxt = follow.next_link(request, outcome.retval, self.app)
            sends = [nxt] if nxt is not None else []
            return Executed({}, sends=sends + follow.callbacks(request, outcome.retval,
                                                                self.app))
        if outcome.state != states.FAILURE:
            return Executed({})
        exc = outcome.retval if isinstance(outcome.retval, BaseException) \
            else RuntimeError(str(outcome.retval))
        here, sent = follow.errbacks(request, exc, outcome.traceback, self.app)
        for call in here:
            call()
        events = []
        chord: list[Any] | None = None
        data = exception_to_data(outcome.retval, outcome.traceback)
        for link in request.chain or ():
            options = link.get("options") or {} if isinstance(link, dict) else {}
            for link_id, name in _result_ids(link):
                events.append(self._tagged(protocol.state_event(
                    link_id, states.FAILURE, name=name, exc=data)))
            if isinstance(options.get("chord"), str) and isinstance(
                    options.get("chord_index"), int):
                chord = [options["chord"], options["chord_index"]]
        done = {"chord": chord} if chord is not None else {}
        return Executed(done, events, sent)

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
        if _membership(h) is not None:
            ignore = False  # its chord needs its result
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
            acks_late=bool(h.get("acks_late")), copy_id=h.get("copy_id"),
            callbacks=_signatures(h.get("link")), errbacks=_signatures(h.get("link_error")),
            chain=_signatures(h.get("chain")), chord=_membership(h),
            chord_chain=h.get("chord_chain") if isinstance(h.get("chord_chain"), list)
            else None)

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


def _signatures(value: Any) -> list[Any] | None:
    """Signature dicts from a header (``link``, ``link_error``, ``chain``)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return None


def _membership(header: dict[str, Any]) -> list[Any] | None:
    """``[body id, index]`` of a task that is part of a chord's header."""
    body, index = header.get("chord"), header.get("chord_index")
    if isinstance(body, str) and isinstance(index, int):
        return [body, index]
    return None


def _result_ids(link: Any) -> list[tuple[str, Any]]:
    """The ids (with task names) of the results a chain's link that will never run stands
    for: a task's own, each member's of a group, a chord's (its body's)."""
    if not isinstance(link, dict):
        return []
    options = link.get("options") or {}
    if link.get("subtask_type") in ("group", "chain"):
        tasks = (link.get("kwargs") or {}).get("tasks") or []
        return [found for task in tasks for found in _result_ids(task)]
    task_id = options.get("task_id")
    return [(task_id, link.get("task"))] if isinstance(task_id, str) else []
