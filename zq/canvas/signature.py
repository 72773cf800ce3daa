"""Signatures: a task call kept as data, to send now, pass to another task or link.

A signature is a dict, as in Celery (``task``, ``args``, ``kwargs``, ``options``,
``subtask_type``, ``immutable``), so it serializes as one and travels as a task's
argument or return value; :func:`signature` rebuilds it, as its own kind (a chain, a
group...) where ``subtask_type`` names one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from .._current import current_app
from ..result import AsyncResult, ResultsApp
from ..utils import new_id


class CanvasApp(ResultsApp, Protocol):
    """What signatures need of an App: its tasks, and sending them."""

    @property
    def tasks(self) -> Mapping[str, Any]: ...

    def send_task(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: dict[str, Any] | None = None, **options: Any) -> AsyncResult: ...

    def task_message(self, name: str, args: Sequence[Any] | None = None,
                     kwargs: dict[str, Any] | None = None,
                     **options: Any) -> tuple[dict[str, Any], bytes]: ...

    def send_tasks(self, messages: Sequence[tuple[dict[str, Any], bytes]],
                   publish_timeout_s: float | None = None) -> None: ...

    def track(self, result: AsyncResult) -> AsyncResult: ...


# Kinds sent as one task message each; the others (chain, group, chord, chunks) send
# themselves as several.
SINGLE_MESSAGE = (None, "xmap", "xstarmap")

# subtask_type -> the class that rebuilds it (chain, group, chord, chunks, xmap, xstarmap).
_KINDS: dict[str, type[Signature]] = {}


def _kind(cls: type[Signature]) -> type[Signature]:
    """Register ``cls`` as the class that rebuilds signatures of its ``subtask_type``."""
    if cls.kind:
        _KINDS[cls.kind] = cls
    return cls


def _task_name(task: Any) -> str:
    return task if isinstance(task, str) else str(getattr(task, "name", "") or "")


class Signature(dict[str, Any]):
    """A task name with arguments and options: ``add.s(2, 2)``.

    Calling it runs the task here; ``delay`` and ``apply_async`` send it. Arguments given
    when it is sent go before its own (a partial), keyword arguments are merged, the new
    ones winning; an immutable signature (``add.si(2, 2)``) takes neither.
    """

    kind: ClassVar[str | None] = None

    def __init__(self, task: Any = None, args: Sequence[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                 immutable: bool = False, app: CanvasApp | None = None,
                 subtask_type: str | None = None, **more_options: Any):
        if isinstance(task, dict):
            data = task
            task, args, kwargs = data.get("task"), data.get("args"), data.get("kwargs")
            options = {**(data.get("options") or {}), **(options or {})}
            immutable = bool(data.get("immutable", immutable))
            subtask_type = data.get("subtask_type", subtask_type)
        super().__init__(task=_task_name(task), args=list(args or ()),
                         kwargs=dict(kwargs or {}),
                         options={**(options or {}), **more_options},
                         subtask_type=subtask_type or self.kind, immutable=bool(immutable))
        self.app = app if app is not None else getattr(task, "app", None)

    # -- the dict's fields as attributes, as Celery has them ------------------------------

    @property
    def task(self) -> str:
        return str(self["task"])

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self["args"])

    @args.setter
    def args(self, value: Sequence[Any]) -> None:
        self["args"] = list(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        return self["kwargs"]  # type: ignore[no-any-return]

    @kwargs.setter
    def kwargs(self, value: dict[str, Any]) -> None:
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]  # type: ignore[no-any-return]

    @options.setter
    def options(self, value: dict[str, Any]) -> None:
        self["options"] = dict(value)

    @property
    def immutable(self) -> bool:
        return bool(self["immutable"])

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def id(self) -> str | None:
        """The task id this signature is sent with, once frozen or set."""
        return self.options.get("task_id")

    def _partial(self, args: Sequence[Any] | None, kwargs: dict[str, Any] | None,
                 own: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """For a workflow: the arguments given now with those a ``clone`` left on it
        (its kwargs but ``own``, the key that holds its tasks), for its first tasks."""
        left = {k: v for k, v in self.kwargs.items() if k != own}
        return (*(args or ()), *self.args), {**left, **(kwargs or {})}

    def _app(self) -> CanvasApp:
        return self.app if self.app is not None else current_app()

    @property
    def type(self) -> Any:
        """The registered task this signature calls."""
        return self._app().tasks[self.task]

    # -- making new signatures ----------------------------------------------------------

    def clone(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        """A copy, with ``args`` put before its own and ``kwargs`` merged over its own
        (neither for an immutable signature) and ``options`` over its options."""
        new = type(self).__new__(type(self))
        dict.__init__(new, self)
        new.app = self.app
        # Signatures it holds (a chain's links, a group's members, a chord's header and
        # body) are copied too, so that freezing the copy leaves this one as it was.
        new["kwargs"] = {k: _copied(v) for k, v in self.kwargs.items()}
        new["args"] = list(self.args)
        if not self.immutable:
            new["args"] = [*(args or ()), *self.args]
            new["kwargs"].update(kwargs or {})
        merged = {k: list(v) if isinstance(v, list) else v for k, v in self.options.items()}
        merged.update(options)
        new["options"] = merged
        return new

    partial = clone

    def replace(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                options: dict[str, Any] | None = None) -> Signature:
        """A copy with its args, kwargs or options replaced (not merged), as in Celery."""
        new = self.clone()
        if args is not None:
            new["args"] = list(args)
        if kwargs is not None:
            new["kwargs"] = dict(kwargs)
        if options is not None:
            new["options"] = dict(options)
        return new

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options in place (``queue``, ``countdown``...); returns the signature."""
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               root_id: str | None = None, parent_id: str | None = None) -> AsyncResult:
        """Fix the task id now (``_id`` or a new one), so the result is known before sending."""
        task_id = self.options.setdefault("task_id", _id or new_id())
        for key, value in (("group_id", group_id), ("root_id", root_id),
                           ("parent_id", parent_id)):
            if value is not None:
                self.options[key] = value
        return AsyncResult(task_id, app=self._app(), task_name=self.task)

    def link(self, callback: Signature) -> Signature:
        """Add a task to call with this one's result when it succeeds; returns ``callback``.

        It travels in the task's options; see docs/canvas.md for what runs it.
        """
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Add a task to call when this one fails; returns ``errback``."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """``link_error``, returning this signature so that calls chain."""
        self.link_error(errback)
        return self

    # -- running ------------------------------------------------------------------------

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Send the task (through the registered task where there is one, so that its
        own options and ``task_always_eager`` count)."""
        sig = self.clone(args, kwargs, **options)
        app = sig._app()
        send_options = _wire_options(sig.options)
        task = app.tasks.get(sig.task)
        if task is not None:
            return task.apply_async(sig.args, sig.kwargs, **send_options)
        return app.send_task(sig.task, sig.args, sig.kwargs, **send_options)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run the task here and now (``Task.apply``)."""
        sig = self.clone(args, kwargs, **options)
        return sig.type.apply(sig.args, sig.kwargs, **_wire_options(sig.options))

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task's function in this process, as Celery does."""
        if self.immutable:
            args, kwargs = (), {}
        return self.type(*args, *self.args, **{**self.kwargs, **kwargs})

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature):
            make: Any = _KINDS["chain"]
            return make(self, other)  # type: ignore[no-any-return]
        return NotImplemented

    # -- as data ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of plain values, the signature as it travels."""
        return _plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: CanvasApp | None = None) -> Signature:
        kind = _KINDS.get(str(data.get("subtask_type") or ""), Signature)
        if kind is Signature:
            return Signature(data, app=app)
        return kind.from_dict(data, app=app)

    def __reduce__(self) -> Any:
        return (_rebuild, (dict(self),))

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args),
                          *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}({args}){'' if not self.immutable else '!'}"

    __hash__ = None


def _copied(value: Any) -> Any:
    """A signature held in another's kwargs (or a list of them) as a copy of its own."""
    if isinstance(value, Signature):
        return value.clone()
    if isinstance(value, list) and value and all(isinstance(v, Signature) for v in value):
        return [v.clone() for v in value]
    return value


def as_list(value: Any) -> list[Any]:
    """An option that takes one item or several (``link``, ``link_error``) as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _rebuild(data: dict[str, Any]) -> Signature:
    return Signature.from_dict(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _wire_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as ``send_task`` takes them: linked signatures as plain dicts."""
    wire = dict(options)
    for key in ("link", "link_error"):
        if key in wire:
            links = wire[key] if isinstance(wire[key], (list, tuple)) else [wire[key]]
            wire[key] = [_plain(link) for link in links]
    wire.pop("subtask_type", None)
    return wire


def signature(varies: Any, args: Sequence[Any] | None = None,
              kwargs: dict[str, Any] | None = None, app: CanvasApp | None = None,
              **options: Any) -> Signature:
    """A signature from a task name and arguments, or rebuilt from its dict.

    ``signature("tasks.add", args=(2, 2))``, ``signature(add, (2, 2))``, ``signature(d)``.
    """
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, dict):
        return Signature.from_dict(varies, app=app)
    return Signature(varies, args, kwargs, app=app, **options)


def maybe_signature(value: Any, app: CanvasApp | None = None) -> Signature | None:
    """``value`` as a signature when it is one, a dict of one, or a task (a signature of
    it with no arguments, as Celery takes ``group([tsum, tsum])``); None stays None."""
    if value is None:
        return None
    if isinstance(value, Signature):
        if app is not None and value.app is None:
            value.app = app
        return value
    if isinstance(value, dict):
        return Signature.from_dict(value, app=app)
    make = getattr(value, "s", None)
    if callable(make) and isinstance(getattr(value, "name", None), str):
        return make()  # type: ignore[no-any-return]  # a task: called with no arguments
    raise TypeError(f"not a signature: {value!r}")

