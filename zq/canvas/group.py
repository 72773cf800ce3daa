"""group: tasks run in parallel; chord: a group and what is to run with its results."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .. import _running
from ..errors import CanvasNotSupported
from ..result import AsyncResult
from ..result_set import GroupResult
from ..utils import new_id
from .chain import _as_dict, _members, _results, chain
from .signature import SINGLE_MESSAGE, CanvasApp, Signature, _kind, _wire_options, maybe_signature

# The built-in task a group inside a chord's header is closed with: it returns the list of
# the group's results, so that the group is one part of the chord.
ACCUMULATE_TASK = "zq.accumulate"
# The built-in task a chord's body that is a group or a chord is sent by (see
# ``register_builtins``).
REPLACE_TASK = "zq.replace_with"


@_kind
class group(Signature):  # noqa: N801 - Celery's name
    """Tasks (signatures, chains, chords) run in parallel.

    Plain tasks go to the router in batches, one round trip per batch; a chain or chord
    inside is sent as it would be alone, with the group's id. A group inside a group is
    unrolled into it (its results are the outer group's, in place), as in Celery.
    ``group([])`` is allowed: its result is ready at once and its value is ``[]``.
    """

    kind = "group"

    def __init__(self, *tasks: Any, app: CanvasApp | None = None, **options: Any):
        members = [maybe_signature(t, app) for t in _members(tasks)]
        flat: list[Signature] = []
        for member in members:
            if isinstance(member, group):
                # A group inside a group is unrolled into it, as in Celery: its members
                # (with its partial arguments) are this group's.
                left = {k: v for k, v in member.kwargs.items() if k != "tasks"}
                flat.extend(t.clone(member.args, left) for t in member.tasks)
            elif member is not None:
                flat.append(member)
        first_app = app or next((t.app for t in flat if t.app is not None), None)
        super().__init__("zq.group", (), {"tasks": flat}, options, app=first_app)

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: CanvasApp | None = None) -> Signature:
        return cls(data["kwargs"]["tasks"], app=app, **(data.get("options") or {}))

    @property
    def tasks(self) -> tuple[Signature, ...]:
        return tuple(self.kwargs["tasks"])

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        """``group | task`` is a chord, as in Celery."""
        if isinstance(other, Signature):
            return chord(self, other)
        return NotImplemented

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        app = self._app()
        if app.settings.task_always_eager:
            return self.apply(args, kwargs, **options)
        args, kwargs = self._partial(args, kwargs, "tasks")
        options = {**self.options, **options}
        group_id = options.pop("group_id", None) or new_id()
        results: list[Any] = []
        messages: list[tuple[dict[str, Any], bytes]] = []
        for task in self.tasks:
            member = task.clone(args, kwargs)
            if member.kind in SINGLE_MESSAGE:
                send = _wire_options({**member.options, **options})
                header, body = app.task_message(member.task, member.args, member.kwargs,
                                                group_id=group_id,
                                                _task=app.tasks.get(member.task), **send)
                messages.append((header, body))
                results.append(AsyncResult(header["id"], app=app, task_name=member.task))
            else:
                results.append(member.apply_async(group_id=group_id, **options))
        if messages:
            app.send_tasks(messages)
        for result in results:
            if isinstance(result, AsyncResult):
                app.track(result)
        return GroupResult(group_id, results, app=app)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run every member here, one after another."""
        args, kwargs = self._partial(args, kwargs, "tasks")
        options = {**self.options, **options}
        group_id = options.pop("group_id", None) or new_id()
        results = [task.clone(args, kwargs).apply(**options) for task in self.tasks]
        return GroupResult(group_id, results, app=self.app)

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               root_id: str | None = None, parent_id: str | None = None) -> Any:
        """Fix every member's id and the group's, so the GroupResult is known before
        sending."""
        group_id = self.options.setdefault("group_id", _id or group_id or new_id())
        results = [t.freeze(root_id=root_id, parent_id=parent_id) for t in self.tasks]
        return GroupResult(group_id, results, app=self.app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __iter__(self) -> Iterator[Signature]:  # type: ignore[override]
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"group([{', '.join(map(repr, self.tasks))}])"


@_kind
class chord(Signature):  # noqa: N801 - Celery's name
    """A group (the header) and a task called with the list of its results (the body).

    Sent to workers, the body goes to the router first, held there until every header
    task has ended (the router counts them as they end, durably: no polling), then runs
    with their results in header order. A header task that does not succeed fails the
    chord with :class:`zq.ChordError` naming it; the body never runs.
    """

    kind = "chord"

    def __init__(self, header: Any, body: Any = None, app: CanvasApp | None = None,
                 **options: Any):
        if not isinstance(header, group):
            header = (group.from_dict(header, app=app) if isinstance(header, dict)
                      and header.get("subtask_type") == "group" else group(header, app=app))
        body_sig = maybe_signature(body, app)
        super().__init__("zq.chord", (), {"header": header, "body": body_sig}, options,
                         app=app or header.app or (body_sig.app if body_sig else None))

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: CanvasApp | None = None) -> Signature:
        kwargs = data["kwargs"]
        return cls(kwargs["header"], kwargs.get("body"), app=app,
                   **(data.get("options") or {}))

    @property
    def header(self) -> group:
        return self.kwargs["header"]  # type: ignore[no-any-return]

    @property
    def body(self) -> Signature | None:
        return self.kwargs.get("body")

    @property
    def tasks(self) -> tuple[Signature, ...]:
        return self.header.tasks

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature):
            return chain(self, other)
        return NotImplemented

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               root_id: str | None = None, parent_id: str | None = None) -> Any:
        """Fix the body's id (the chord's result) and the header's ids."""
        body_id = self.options.setdefault("task_id", _id or (
            self.body.id if self.body is not None else None) or new_id())
        if group_id is not None:
            self.options["group_id"] = group_id
        header = self.header.freeze()
        return AsyncResult(body_id, app=self._app(),
                           task_name=self.body.task if self.body is not None else None,
                           parent=header)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, body: Any = None,
                    **options: Any) -> Any:
        """Send the body (held by the router) and then the header; returns the body's
        result, whose ``parent`` is the header's GroupResult."""
        app = self._app()
        if app.settings.task_always_eager:
            return self.apply(args, kwargs, body=body, **options)
        body_sig = maybe_signature(body, self.app) or self.body
        if body_sig is None:
            raise ValueError("a chord needs a body")
        plan = _ChordPlan(self, body_sig.clone(), args, kwargs, dict(options))
        return plan.send(app)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              body: Any = None, **options: Any) -> Any:
        """Run the header here, then the body with the header's results in order."""
        body_sig = maybe_signature(body, self.app) or self.body
        if body_sig is None:
            raise ValueError("a chord needs a body")
        left = {k: v for k, v in self.kwargs.items() if k not in ("header", "body")}
        header = self.header.apply((*(args or ()), *self.args), {**left, **(kwargs or {})})
        for result in header.results:
            if result.failed():
                return result
        return body_sig.apply((header.get(),), **options)

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return self.apply_async((), {}, body=body, **options)

    def __repr__(self) -> str:
        body = self.body
        return f"chord({self.header!r}, {body!r})" if body is not None \
            else f"chord({self.header!r})"


class _ChordPlan:
    """How one chord is sent: its body's message first, held by the router until the
    header's parts have ended, then the header, each part knowing its place."""

    def __init__(self, sig: chord, body: Signature, args: Sequence[Any] | None,
                 kwargs: dict[str, Any] | None, options: dict[str, Any]):
        options = {**sig.options, **options}
        # Partial arguments for every part: those given now, the chord's, its header's.
        header = sig.header
        left = {k: v for k, v in sig.kwargs.items() if k not in ("header", "body")}
        header_left = {k: v for k, v in header.kwargs.items() if k != "tasks"}
        self.args = (*(args or ()), *sig.args, *header.args)
        self.kwargs = {**header_left, **left, **(kwargs or {})}
        self.group_id: str = sig.header.options.get("group_id") or new_id()
        self.parts = [t.clone() for t in sig.header.tasks]
        for part in self.parts:
            if part.kind in SINGLE_MESSAGE:
                part.options.setdefault("task_id", new_id())
            else:
                part.freeze(part.options.get("task_id"))
        result_id = options.pop("task_id", None)
        parent = _running.innermost_request()
        first = self.parts[0].id if self.parts and self.parts[0].kind in SINGLE_MESSAGE \
            else None
        self.root_id: str = options.pop("root_id", None) or (
            (parent.root_id or parent.id) if parent is not None else None) or (
            first or result_id or body.id or new_id())
        self.family: dict[str, Any] = {"root_id": self.root_id}
        parent_id = options.pop("parent_id", None) or (parent.id if parent is not None else None)
        if parent_id:
            self.family["parent_id"] = parent_id
        # What is the body's: where its result goes on, and its own place in a chord.
        body_options = {key: options.pop(key) for key in (
            "chain", "link", "link_error", "group_id", "chord", "chord_index", "chord_chain")
            if options.get(key) is not None}
        # The rest (queue, countdown, priority...) is the header's, as for a group.
        self.part_options = options
        self.head, self.links = self._body(body, result_id, body_options)

    def _body(self, body: Signature, result_id: str | None,
              options: dict[str, Any]) -> tuple[Signature, list[Signature]]:
        """The task that takes the header's results (the body, or the first link of a
        chain body, the rest following it), and the body's links (one for a task)."""
        if body.kind in SINGLE_MESSAGE:
            head = body.clone(**self.family, **options)
            head.options["task_id"] = result_id or body.id or new_id()
            return head, [head]
        if body.kind in ("group", "chord", "chunks"):
            # Sent on release by a task that replaces itself with it, given the header's
            # results as partial arguments: its result is the chord's.
            body = Signature(REPLACE_TASK, (), {"sig": body.to_dict()}, app=body.app)
            return self._body(body, result_id, options)
        if body.kind != "chain":
            raise CanvasNotSupported(f"a chord's body cannot be a {body.kind}: {body!r}")
        continuation = list(options.pop("chain", None) or ())
        if result_id:
            options["task_id"] = result_id
        assert isinstance(body, chain)
        links = body._prepared((), {}, {**self.family, **options})
        head = links[0]
        following = [_as_dict(link) for link in links[1:]] + continuation
        if following:
            head.options["chain"] = following
        return head, links

    def send(self, app: CanvasApp) -> Any:
        head = self.head
        if not self.parts:
            head.apply_async(([],))
            return self._result(app, [])
        messages = [self._message(app, head, head.args, head.kwargs, {
            "chord_size": len(self.parts), "chord_immutable": head.immutable or None})]
        later: list[tuple[Signature, dict[str, Any]]] = []
        results: list[Any] = []
        for index, part in enumerate(self.parts):
            member = part.clone(self.args, self.kwargs)
            place = {**self.part_options, **self.family, "group_id": self.group_id,
                     "chord": head.id, "chord_index": index}
            if member.kind in SINGLE_MESSAGE:
                messages.append(self._message(app, member, member.args, member.kwargs, place))
                results.append(AsyncResult(member.id or "", app=app, task_name=member.task))
                continue
            later.append((member, place))
            results.append(member.freeze())
        # The body first: the router holds it before any part can end.
        app.send_tasks(messages)
        for member, place in later:
            member.apply_async(**place)
        return self._result(app, results)

    def _result(self, app: CanvasApp, parts: list[Any]) -> Any:
        """The body's result (a chain body's last link's, its ``parent`` walking back to
        the first), whose first link's ``parent`` is the header's GroupResult."""
        header = GroupResult(self.group_id, parts, app=app)
        first = AsyncResult(self.head.id or "", app=app, task_name=self.head.task,
                            parent=header)
        if len(self.links) == 1:
            app.track(first)
            return first
        last = _results(self.links[1:], app)
        node = last
        while node.parent is not None:
            node = node.parent
        node.parent = first
        first.children = [node]
        return last

    @staticmethod
    def _message(app: CanvasApp, sig: Signature, args: Sequence[Any],
                 kwargs: dict[str, Any], options: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        send = _wire_options({**sig.options, **options})
        return app.task_message(sig.task, args, kwargs, _task=app.tasks.get(sig.task), **send)
