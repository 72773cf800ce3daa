"""Signatures and chains: a task call kept as data, to send now or link to another."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ._current import current_app
from .result import AsyncResult, GroupResult, ResultsApp
from .utils import new_id


class CanvasApp(ResultsApp, Protocol):
    """What signatures need of an App: its tasks, and sending them."""

    @property
    def tasks(self) -> Mapping[str, Callable[..., Any]]: ...

    def send_task(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: dict[str, Any] | None = None, **options: Any) -> AsyncResult: ...

    def task_message(self, name: str, args: Sequence[Any] | None = None,
                     kwargs: dict[str, Any] | None = None,
                     **options: Any) -> tuple[dict[str, Any], bytes]: ...

    def send_tasks(self, messages: Sequence[tuple[dict[str, Any], bytes]],
                   publish_timeout_s: float | None = None) -> None: ...

    def track(self, result: AsyncResult) -> AsyncResult: ...


class Signature:
    """A task name with arguments and options: ``add.s(2, 2)``."""

    def __init__(self, task: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, immutable: bool = False,
                 app: CanvasApp | None = None):
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable
        self.app = app

    def _app(self) -> CanvasApp:
        return self.app if self.app is not None else current_app()

    def clone(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        """A copy with ``args`` put before the signature's own (unless it is immutable)."""
        new_args = self.args if self.immutable else tuple(args) + self.args
        new_kwargs = self.kwargs if self.immutable else {**self.kwargs, **(kwargs or {})}
        return Signature(self.task, new_args, new_kwargs, {**self.options, **options},
                         self.immutable, self.app)

    def set(self, **options: Any) -> Signature:
        self.options.update(options)
        return self

    def apply_async(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                    **options: Any) -> AsyncResult:
        sig = self.clone(args, kwargs, **options)
        return sig._app().send_task(sig.task, sig.args, sig.kwargs, **sig.options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "args": list(self.args), "kwargs": self.kwargs,
                "options": self.options, "immutable": self.immutable}

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: CanvasApp | None = None) -> Signature:
        return cls(data["task"], data.get("args", ()), data.get("kwargs"),
                   data.get("options"), bool(data.get("immutable")), app)

    def __or__(self, other: Signature | chain) -> chain:
        if isinstance(other, chain):
            return chain(self, *other.tasks)
        return chain(self, other)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._app().tasks[self.task](*(tuple(args) + self.args),
                                            **{**self.kwargs, **kwargs})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}({args})"


signature = Signature


class chain:  # noqa: N801 - Celery's name
    """Tasks run one after another, each given the result of the one before.

    The first task is sent with the rest of the chain in its message; the worker that
    finishes a link sends the next one, with the result put before its arguments.
    """

    def __init__(self, *tasks: Signature):
        if len(tasks) == 1 and isinstance(tasks[0], (list, tuple)):
            tasks = tuple(tasks[0])
        if not tasks:
            raise ValueError("a chain needs at least one task")
        self.tasks = tuple(tasks)

    def __or__(self, other: Signature | chain) -> chain:
        if isinstance(other, chain):
            return chain(*self.tasks, *other.tasks)
        return chain(*self.tasks, other)

    def apply_async(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                    **options: Any) -> AsyncResult:
        """Send the first link; returns the result of the last one (as Celery does)."""
        links = [t.clone() for t in self.tasks]
        for link in links:
            link.options.setdefault("task_id", new_id())
        first, rest = links[0], links[1:]
        first = first.clone(args, kwargs, **options)
        if rest:
            first.options["chain"] = [link.to_dict() for link in rest]
        first.apply_async()
        return AsyncResult(links[-1].options["task_id"], app=links[-1]._app())

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))


class group:  # noqa: N801 - Celery's name
    """Tasks run in parallel; sent to the router in batches, one round trip per batch."""

    def __init__(self, *tasks: Signature | Iterable[Signature]):
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            tasks = tuple(tasks[0])
        self.tasks: tuple[Signature, ...] = tuple(tasks)  # type: ignore[arg-type]

    def apply_async(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                    **options: Any) -> GroupResult:
        if not self.tasks:
            raise ValueError("a group needs at least one task")
        app = self.tasks[0]._app()
        group_id = options.pop("group_id", None) or new_id()
        messages = []
        for task in self.tasks:
            sig = task.clone(args, kwargs, **options)
            messages.append(app.task_message(sig.task, sig.args, sig.kwargs,
                                             group_id=group_id, **sig.options))
        app.send_tasks(messages)
        results = [app.track(AsyncResult(header["id"], app=app)) for header, _ in messages]
        return GroupResult(group_id, results, app=app)

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"
