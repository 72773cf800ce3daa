"""Results taken together: ResultSet, and GroupResult (a group's, savable by its id)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ._current import current_app
from .result import AsyncResult, ResultsApp, assert_will_not_block, value_of
from .utils import new_id

# The state of the row a saved GroupResult is kept in, under the group's id.
GROUP_STATE = "GROUP"


class SavingApp(ResultsApp, Protocol):
    """What saving a GroupResult needs of its App: recording a state under an id."""

    def emit_state(self, task_id: str, state: str, meta: Any, *, retries: int = 0,
                   name: str | None = None) -> None: ...


class ResultSet:
    """Several results waited on and asked about together, in the order given.

    A member may itself be a ResultSet (the result of a group inside a group).
    """

    def __init__(self, results: Iterable[Any], app: ResultsApp | None = None, **_: Any):
        self.results: list[Any] = list(results)
        self._app = app

    @property
    def app(self) -> ResultsApp:
        if self._app is not None:
            return self._app
        for result in self.results:
            return result.app  # type: ignore[no-any-return]
        app: ResultsApp = current_app()
        return app

    @app.setter
    def app(self, app: ResultsApp | None) -> None:
        self._app = app

    # -- the members --------------------------------------------------------------------

    def add(self, result: Any) -> None:
        if result not in self.results:
            self.results.append(result)

    def update(self, results: Iterable[Any]) -> None:
        for result in results:
            self.add(result)

    def remove(self, result: Any) -> None:
        if isinstance(result, str):
            result = AsyncResult(result, app=self.app)
        self.results.remove(result)

    def discard(self, result: Any) -> None:
        try:
            self.remove(result)
        except ValueError:
            pass

    def clear(self) -> None:
        self.results.clear()

    # -- asking -------------------------------------------------------------------------

    def get(self, timeout: float | None = None, propagate: bool = True,
            disable_sync_subtasks: bool = True, callback: Callable[..., Any] | None = None,
            **_ignored: Any) -> list[Any] | None:
        """Every member's value, in order; ``timeout`` bounds the whole wait.

        With ``callback``, it is called as ``callback(task_id, value)`` for each member
        instead, and None is returned (Celery's ``join``).
        """
        assert_will_not_block(disable_sync_subtasks)
        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[Any] = []
        for result in self.results:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            value = result.get(timeout=remaining, propagate=propagate,
                               disable_sync_subtasks=disable_sync_subtasks)
            if callback is not None:
                callback(result.id, value)
            else:
                values.append(value)
        return None if callback is not None else values

    join = get

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(1 for r in self.results if r.successful())

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM", **_: Any) -> None:
        for result in self.results:
            result.revoke(terminate=terminate, signal=signal)

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return self.results == other.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(str(r) for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group, in the order its tasks were given, under the group's id.

    ``save()`` keeps the members' ids in the results store under the group's id, and
    ``GroupResult.restore(group_id)`` brings them back (in a custom ``GROUP`` state row).
    """

    def __init__(self, id: str | None = None, results: Iterable[Any] = (),  # noqa: A002
                 app: ResultsApp | None = None, parent: Any = None, **_: Any):
        super().__init__(results, app=app)
        self.id = id or new_id()
        self.parent = parent

    @property
    def children(self) -> list[Any]:
        return self.results

    def save(self) -> GroupResult:
        app = self.app
        if not hasattr(app, "emit_state"):
            raise TypeError(f"{app!r} cannot save a GroupResult")
        saving: SavingApp = app  # type: ignore[assignment]
        saving.emit_state(self.id, GROUP_STATE, _tree(self))
        return self

    @classmethod
    def restore(cls, id: str, app: ResultsApp | None = None,  # noqa: A002
                **_: Any) -> GroupResult | None:
        """The GroupResult saved under ``id``, or None if there is none."""
        app = app if app is not None else current_app()
        meta = app.results_client().get([id])[0]
        if meta.get("state") != GROUP_STATE:
            return None
        saved = _from_tree(value_of(meta, app.settings.result_content_types), app)
        return saved if isinstance(saved, GroupResult) else None

    def delete(self) -> None:
        """Forget the saved group (not its members' results)."""
        self.app.results_client().forget([self.id])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return self.id == other.id and self.results == other.results
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(str(r) for r in self.results)}]>"


def _tree(result: Any) -> Any:
    if isinstance(result, GroupResult):
        return {"group": result.id, "results": [_tree(r) for r in result.results]}
    if isinstance(result, ResultSet):
        return {"set": [_tree(r) for r in result.results]}
    return result.id


def _from_tree(node: Any, app: ResultsApp) -> Any:
    if isinstance(node, str):
        return AsyncResult(node, app=app)
    if isinstance(node, dict) and "group" in node:
        return GroupResult(node["group"], [_from_tree(n, app) for n in node["results"]], app)
    if isinstance(node, dict) and "set" in node:
        return ResultSet([_from_tree(n, app) for n in node["set"]], app)
    raise ValueError(f"not a saved result: {node!r}")
