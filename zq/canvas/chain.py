"""chain: tasks run one after another, each given the result of the one before."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .. import states
from ..result import AsyncResult
from .. import _running
from ..utils import new_id
from .signature import (_KINDS, SINGLE_MESSAGE, CanvasApp, Signature, _kind, _wire_options,
                        as_list, maybe_signature)


def _members(tasks: tuple[Any, ...]) -> Iterable[Any]:
    """``chain(a, b)`` and ``chain([a, b])`` (or a generator) both give ``a, b``."""
    if len(tasks) == 1 and not isinstance(tasks[0], dict):
        return tuple(tasks[0])
    return tasks


@_kind
class chain(Signature):  # noqa: N801 - Celery's name
    """Tasks run one after another, each given the result of the one before.

    A chain inside a chain is flattened into it, and a group followed by a task becomes a
    chord, as in Celery. The first task is sent with the rest of the chain in its message;
    the worker that finishes a link sends the next one with the result put before its
    arguments (not for an immutable one). Every link knows the chain's first task as its
    ``root_id`` and the link before it as its ``parent_id``.
    """

    kind = "chain"

    def __init__(self, *tasks: Any, app: CanvasApp | None = None, **options: Any):
        flat: list[Signature] = []
        for task in _members(tasks):
            sig = maybe_signature(task, app)
            if sig is None:
                continue
            if isinstance(sig, chain):
                for inner in sig.tasks:
                    _append(flat, inner)
            else:
                _append(flat, sig)
        first_app = app or next((t.app for t in flat if t.app is not None), None)
        super().__init__("zq.chain", (), {"tasks": flat}, options, app=first_app)

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: CanvasApp | None = None) -> Signature:
        return cls(*data["kwargs"]["tasks"], app=app, **(data.get("options") or {}))

    @property
    def tasks(self) -> tuple[Signature, ...]:
        return tuple(self.kwargs["tasks"])

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self.app, **self.options)
        return NotImplemented

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               root_id: str | None = None, parent_id: str | None = None) -> Any:
        """Fix every link's id (``_id`` is the last link's: the chain's result), so that
        the last link's result, its ``parent`` walking back, is known before sending."""
        links = self.tasks
        if not links:
            raise ValueError("a chain needs at least one task")
        if _id:
            links[-1].options.setdefault("task_id", _id)
        if group_id is not None:
            self.options["group_id"] = group_id
        for link in links:
            if link.kind in SINGLE_MESSAGE:
                link.options.setdefault("task_id", new_id())
            else:
                link.freeze(link.options.get("task_id"))
        return _results(list(links), self._app(), track=False)

    def _prepared(self, args: Sequence[Any] | None, kwargs: dict[str, Any] | None,
                  options: dict[str, Any]) -> list[Signature]:
        """The links with their ids, root and parent ids fixed, the chain's options given
        out as Celery does: ``link`` to the last, ``link_error`` to every link, a chord's
        membership to the last, others to the first. A group or chord link is frozen
        whole, so that a worker sending it twice sends the same ids."""
        args, kwargs = self._partial(args, kwargs, "tasks")
        options = {**self.options, **options}
        links = [t.clone() for t in self.tasks]
        if not links:
            raise ValueError("a chain needs at least one task")
        last_id = options.pop("task_id", None)
        if last_id:
            links[-1].options["task_id"] = last_id
        parent = _running.innermost_request()
        for link in links:
            if link.kind in SINGLE_MESSAGE:
                link.options.setdefault("task_id", new_id())
            else:
                link.freeze(link.options.get("task_id"))
        root_id = options.pop("root_id", None) or (
            (parent.root_id or parent.id) if parent is not None else None) or _first_id(links)
        parent_id = options.pop("parent_id", None) or (parent.id if parent is not None else None)
        for link in links:
            link.options["root_id"] = root_id
            if parent_id:
                link.options["parent_id"] = parent_id
            parent_id = link.id
        for errback in as_list(options.pop("link_error", None)):
            for link in links:
                link.link_error(errback)
        for callback in as_list(options.pop("link", None)):
            links[-1].link(callback)
        for key in ("group_id", "chord", "chord_index"):
            if options.get(key) is not None and not (key == "group_id"
                                                     and links[-1].kind == "group"):
                links[-1].options[key] = options.pop(key)
        options.pop("group_id", None)
        part = links[-1].options.get("chord"), links[-1].options.get("chord_index")
        if part[0] is not None and part[1] is not None:
            # The chain is a chord part: a link before the last that fails (however it
            # ends: the router may end it) settles the part, as the last link's end does.
            for link in links[:-1]:
                _mark_chain_part(link, list(part))
        links[0] = links[0].clone(args, kwargs, **options)
        return links

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Send the first link with the rest of the chain; returns the last link's result,
        whose ``parent`` walks back along the chain (as Celery does)."""
        app = self._app()
        if app.settings.task_always_eager:
            return self.apply(args, kwargs, **options)
        continuation = list(options.pop("chain", None) or ())
        links = self._prepared(args, kwargs, options)
        first, rest = links[0], links[1:]
        following = [_as_dict(link) for link in rest] + continuation
        if first.kind == "group" and following:
            raise ValueError(f"a group cannot be followed inside a chain here: {self!r}")
        if following:
            first.apply_async(chain=following)
        else:
            first.apply_async()
        return _results(links, app)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run every link here, one after another; stops at the first that does not
        succeed and returns its result (its ``parent`` walks back)."""
        links = self._prepared(args, kwargs, options)
        previous: Any = None
        for index, link in enumerate(links):
            if index == 0:
                result = link.apply()
            else:
                result = link.apply((previous.get(),))
            if previous is not None:
                result.parent = previous
                previous.children = [result]
            previous = result
            if not _succeeded(result):
                break
        return previous

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) or "chain()"


def _append(flat: list[Signature], sig: Signature) -> None:
    """Add ``sig`` to a chain's links: after a group it makes a chord with that group (a
    group after a group too: the second is the body, given the first's results)."""
    if flat and flat[-1].kind == "group":
        chord: Any = _KINDS["chord"]
        flat[-1] = chord(flat[-1], sig)
    else:
        flat.append(sig)


def _succeeded(result: Any) -> bool:
    if hasattr(result, "results"):
        return all(_succeeded(r) for r in result.results)
    return bool(result.state == states.SUCCESS)


def _mark_chain_part(link: Signature, part: list[Any]) -> None:
    """Give a link (each task of a group or chord link) the chord part its chain is."""
    if link.kind in SINGLE_MESSAGE:
        link.options["chord_chain"] = part
    elif link.kind == "chord":
        link.options["chord_chain"] = part  # its body's; its header's parts are its own
    else:
        for task in getattr(link, "tasks", ()):
            _mark_chain_part(task, part)


def _first_id(links: list[Signature]) -> str | None:
    """The id of the first task a chain runs (for its ``root_id``)."""
    first = links[0]
    while first.kind not in SINGLE_MESSAGE:
        inner = first.tasks if hasattr(first, "tasks") else ()
        if not inner:
            return first.id
        first = inner[0]
    return first.id


def _as_dict(link: Signature) -> dict[str, Any]:
    """A link as it travels in a task's ``chain``: plain values only."""
    data = link.to_dict()
    return dict(data, options=_wire_options(data["options"]))


def _results(links: list[Signature], app: CanvasApp, track: bool = True) -> Any:
    """The links' results, each knowing the one before (``parent``) and after."""
    previous: Any = None
    for link in links:
        if link.kind in SINGLE_MESSAGE:
            result: Any = AsyncResult(link.id or "", app=app, task_name=link.task)
        else:
            result = link.freeze()
        if previous is not None:
            result.parent = previous
            previous.children = [result]
        previous = result
    assert previous is not None
    if track and isinstance(previous, AsyncResult):
        app.track(previous)
    return previous
