"""What follows a task's end: the next link of its chain, its ``link`` callbacks, its
errbacks. The worker sends them; ``Task.apply`` runs them here.

A callback sent by a worker gets an id made from the task's id (:func:`derived_id`), so
that a task whose outcome is reported twice (its actor killed after sending them and
before the router recorded its end) sends the same ids again, and the router takes them
once.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .signature import SINGLE_MESSAGE, CanvasApp, Signature, maybe_signature

logger = logging.getLogger("zq.canvas")

_NAMESPACE = uuid.UUID("5a0c4f3e-7f6b-4d1e-9a57-2a3c1e0d9b41")

def derived_id(task_id: str, what: str) -> str:
    """A task id fixed by ``task_id`` and ``what`` ("link:0", "replace"...)."""
    return str(uuid.uuid5(_NAMESPACE, f"{task_id}\x1f{what}"))


@dataclass(frozen=True)
class FollowUp:
    """A signature to send (or run) with these arguments and options."""

    signature: Signature
    args: tuple[Any, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def send(self) -> Any:
        return self.signature.apply_async(self.args, **self.options)

    def run(self) -> Any:
        return self.signature.apply(self.args, **self.options)


def with_id(sig: Signature, task_id: str) -> Signature:
    """``sig`` sent under ``task_id`` (a group: its group id; a chain: its last link's;
    a chord: its body's), unless it has an id already."""
    if sig.kind in SINGLE_MESSAGE:
        sig.options.setdefault("task_id", task_id)
    elif sig.kind == "group":
        sig.options.setdefault("group_id", task_id)
    else:
        sig.freeze(task_id)
    return sig


def next_link(request: Any, retval: Any, app: CanvasApp | None) -> FollowUp | None:
    """The next link of the request's chain, given ``retval``; the rest of the chain goes
    with it."""
    rest = request.chain
    if not rest:
        return None
    nxt = Signature.from_dict(rest[0], app=app)
    options: dict[str, Any] = {"chain": list(rest[1:])} if len(rest) > 1 else {}
    return FollowUp(nxt, (retval,), options)


def callbacks(request: Any, retval: Any, app: CanvasApp | None) -> list[FollowUp]:
    """The ``link`` callbacks of a task that succeeded, each given its result (but an
    immutable one); their parent is the task."""
    ups = []
    for index, link in enumerate(request.callbacks or ()):
        sig = maybe_signature(link, app)
        if sig is None:
            continue
        sig = with_id(sig.clone(), derived_id(request.id or "", f"link:{index}"))
        ups.append(FollowUp(sig, (retval,), _family(request)))
    return ups


def errbacks(request: Any, exc: BaseException, traceback: str | None,
             app: CanvasApp | None) -> tuple[list[Callable[[], Any]], list[FollowUp]]:
    """A failed task's errbacks, as Celery decides between them: an errback task that
    takes more than one positional argument is called here, now, with ``(request, exc,
    traceback)``; the others (the old ``(task_id)`` form) are sent as tasks."""
    here: list[Callable[[], Any]] = []
    sent: list[FollowUp] = []
    for index, link in enumerate(request.errbacks or ()):
        sig = maybe_signature(link, app)
        if sig is None:
            continue
        if _takes_request(sig):
            here.append(_call(sig, request, exc, traceback))
        else:
            sig = with_id(sig.clone(), derived_id(request.id or "", f"errback:{index}"))
            sent.append(FollowUp(sig, (request.id,), _family(request)))
    return here, sent


def _family(request: Any) -> dict[str, Any]:
    return {"parent_id": request.id, "root_id": request.root_id or request.id}


def _takes_request(sig: Signature) -> bool:
    """Whether the errback's task takes ``(request, exc, traceback)`` (Celery 5's form):
    more than one positional parameter, or ``*args``."""
    if sig.kind not in SINGLE_MESSAGE:
        return False
    app = sig.app
    task = app.tasks.get(sig.task) if app is not None else None
    if task is None:
        return False
    try:
        params = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for param in params:
        if param.kind is param.VAR_POSITIONAL:
            return True
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional > 1


def _call(sig: Signature, request: Any, exc: BaseException,
          traceback: str | None) -> Callable[[], Any]:
    def call() -> Any:
        try:
            return sig(request, exc, traceback)
        except Exception:
            logger.exception("errback %r of task %s raised", sig, request.id)
            return None
    return call
