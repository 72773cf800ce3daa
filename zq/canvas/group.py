"""group: tasks run in parallel; chord: a group and what is to run with its results."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import CanvasNotSupported
from ..result import AsyncResult
from ..result_set import GroupResult
from ..utils import new_id
from .chain import _members, chain
from .signature import CanvasApp, Signature, _kind, _wire_options, maybe_signature

# Members that are one task message each; the others (chains, groups) send themselves.
_SINGLE_MESSAGE = (None, "xmap", "xstarmap")


@_kind
class group(Signature):  # noqa: N801 - Celery's name
    """Tasks (signatures, chains, groups) run in parallel.

    Plain tasks go to the router in batches, one round trip per batch; a chain or group
    inside is sent as it would be alone, with the group's id. ``group([])`` is allowed:
    its result is ready at once and its value is ``[]``.
    """

    kind = "group"

    def __init__(self, *tasks: Any, app: CanvasApp | None = None, **options: Any):
        members = [maybe_signature(t, app) for t in _members(tasks)]
        flat = [m for m in members if m is not None]
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
            if member.kind in _SINGLE_MESSAGE:
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

    Run eagerly (``apply``, ``task_always_eager``) it works as in Celery. Sent to workers
    it raises :class:`zq.CanvasNotSupported`: zq has no chord counting yet.
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

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, body: Any = None,
                    **options: Any) -> Any:
        app = self._app()
        if app.settings.task_always_eager:
            return self.apply(args, kwargs, body=body, **options)
        raise CanvasNotSupported(
            f"chords are not supported yet: {self!r} was not sent (run it eagerly with "
            f"apply(), or wait for the group's results and send the body yourself)")

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              body: Any = None, **options: Any) -> Any:
        """Run the header here, then the body with the header's results in order."""
        body_sig = maybe_signature(body, self.app) or self.body
        if body_sig is None:
            raise ValueError("a chord needs a body")
        header = self.header.apply(args, kwargs)
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

