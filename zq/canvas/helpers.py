"""map, starmap and chunks: one task called over a list, on the worker."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .group import ACCUMULATE_TASK, REPLACE_TASK, group
from .signature import CanvasApp, Signature, _kind, signature

MAP_TASK = "zq.map"
STARMAP_TASK = "zq.starmap"


@_kind
class xmap(Signature):  # noqa: N801 - Celery's name
    """One message that calls ``task`` with each item of ``it`` on the worker, and
    returns the list of results: ``add.map(...)``."""

    kind = "xmap"
    task_name = MAP_TASK

    def __init__(self, task: Any, it: Iterable[Any], app: CanvasApp | None = None,
                 **options: Any):
        sig = signature(task, app=app)
        super().__init__(self.task_name, (), {"task": sig, "it": list(it)}, options,
                         immutable=True, app=app or sig.app)

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: CanvasApp | None = None) -> Signature:
        kwargs = data["kwargs"]
        return cls(kwargs["task"], kwargs["it"], app=app, **(data.get("options") or {}))

    def __repr__(self) -> str:
        return f"[{self.kwargs['task']!r}(x) for x in {self.kwargs['it']!r}]"


@_kind
class xstarmap(xmap):  # noqa: N801 - Celery's name
    """As :class:`xmap`, each item being the arguments: ``add.starmap(zip(a, b))``."""

    kind = "xstarmap"
    task_name = STARMAP_TASK

    def __repr__(self) -> str:
        return f"[{self.kwargs['task']!r}(*x) for x in {self.kwargs['it']!r}]"


@_kind
class chunks(Signature):  # noqa: N801 - Celery's name
    """``it`` split into parts of ``n`` items, each part one ``starmap`` message; sent as
    a group, whose result is the list of the parts' lists."""

    kind = "chunks"

    def __init__(self, task: Any, it: Iterable[Any], n: int, app: CanvasApp | None = None,
                 **options: Any):
        if n < 1:
            raise ValueError("chunks() needs n >= 1")
        sig = signature(task, app=app)
        super().__init__("zq.chunks", (), {"task": sig, "it": list(it), "n": n}, options,
                         immutable=True, app=app or sig.app)

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: CanvasApp | None = None) -> Signature:
        kwargs = data["kwargs"]
        return cls(kwargs["task"], kwargs["it"], kwargs["n"], app=app,
                   **(data.get("options") or {}))

    def group(self) -> group:
        task, items, n = self.kwargs["task"], self.kwargs["it"], self.kwargs["n"]
        parts = [items[i:i + n] for i in range(0, len(items), n)]
        return group([xstarmap(task, part, app=self.app) for part in parts], app=self.app,
                     **self.options)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        return self.group().apply_async(**options)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        return self.group().apply(**options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async()

    def __repr__(self) -> str:
        return f"chunks({self.kwargs['task']!r}, {len(self.kwargs['it'])} items, " \
               f"n={self.kwargs['n']})"


def register_builtins(app: Any) -> None:
    """Give ``app`` the tasks that run ``map`` and ``starmap`` on a worker, and the one
    that closes a group a task is replaced with (its results as one list), and the one
    that sends a chord's body that is a group or a chord."""

    def run_map(task: Any, it: Sequence[Any]) -> list[Any]:
        run = signature(task, app=app).type
        return [run(item) for item in it]

    def run_starmap(task: Any, it: Sequence[Any]) -> list[Any]:
        run = signature(task, app=app).type
        return [run(*item) for item in it]

    def accumulate(*args: Any, index: int | None = None) -> Any:
        if index is not None:
            return args[index]
        return args[0] if len(args) == 1 else list(args)

    app.task(name=MAP_TASK)(run_map)
    app.task(name=STARMAP_TASK)(run_starmap)
    def replace_with(self: Any, *args: Any, sig: dict[str, Any]) -> Any:
        return self.replace(signature(sig, app=app).clone(args))

    app.task(name=ACCUMULATE_TASK)(accumulate)
    app.task(name=REPLACE_TASK, bind=True)(replace_with)
