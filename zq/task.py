"""The Task base class and the request context.

A task is an actor: each process creates one instance of each task class and reuses it,
so state kept on ``self`` lives as long as the process.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from . import states
from .canvas import CanvasApp, Signature, chord, chunks, follow, signature, xmap, xstarmap
from .canvas.follow import derived_id
from .canvas.signature import SINGLE_MESSAGE, as_list
from .canvas.group import ACCUMULATE_TASK
from .errors import Ignore, MaxRetriesExceededError, Retry
from .protocol import RELAY_INDEX
from .result import AsyncResult, EagerResult
from . import _running
from .trace import trace
from .utils import new_id


class TaskApp(CanvasApp, Protocol):
    """What a task needs of its App (a :class:`zq.App`)."""

    def AsyncResult(self, task_id: str) -> AsyncResult: ...  # noqa: N802 - Celery's name

    def emit_state(self, task_id: str, state: str, meta: Any, *, retries: int = 0,
                   name: str | None = None) -> None: ...

    def register_task_class(self, cls: type[Task]) -> Task: ...



class _ArgumentCheck:
    """Whether a call's arguments fit a task's signature, as ``Signature.bind`` says.

    Whether they bind depends only on how many positional arguments there are and which
    keywords are given, never on the values, so each shape of call found to bind is
    remembered and not bound again. A shape that does not bind is bound each time, so
    that the error is bind's own.
    """

    _KEPT = 256  # shapes remembered per task class

    def __init__(self, signature: inspect.Signature | None) -> None:
        self.signature = signature
        self._fits: set[int | tuple[int, frozenset[str]]] = set()

    def check(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise bind's TypeError if the arguments do not fit."""
        if self.signature is None:
            return
        if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
            self.signature.bind(*args, **kwargs)  # its own word on anything else
            return
        shape = (len(args), frozenset(kwargs)) if kwargs else len(args)
        if shape in self._fits:
            return
        self.signature.bind(*args, **kwargs)
        if len(self._fits) < self._KEPT:
            self._fits.add(shape)


def current_request() -> Request | None:
    """The request of the task running in this thread, if one is."""
    request: Request | None = _running.innermost_request()
    return request


def current_task() -> Task | None:
    """The task running in this thread, if one is."""
    task: Task | None = _running.innermost_task()
    return task


def _relay_to(sig: Signature, task_id: str) -> None:
    """Mark the task whose result is ``sig``'s (its last link, a chord's body) as the
    one the router relays to ``task_id``, the replaced task: a chord of one part."""
    if sig.kind == "chain":
        _relay_to(sig.kwargs["tasks"][-1], task_id)
    else:
        sig.set(chord=task_id, chord_index=RELAY_INDEX)


def check_time_limits(soft: float | None, hard: float | None, name: str | None) -> None:
    """Celery's rule: the soft time limit may not be past the hard one."""
    if soft and hard and soft > hard:
        raise ValueError(f"soft_time_limit ({soft}) must be less than or equal to "
                         f"time_limit ({hard}) for task {name}")


class Request:
    """What a running task knows of its own call: ``self.request`` inside a bound task."""

    def __init__(self, **fields: Any):
        self.id: str | None = None
        self.task: str | None = None
        self.args: Sequence[Any] = ()
        self.kwargs: dict[str, Any] = {}
        self.retries = 0
        self.eta: float | None = None
        self.expires: float | None = None
        self.hostname: str | None = None
        self.delivery_info: dict[str, Any] = {}
        self.is_eager = False
        self.called_directly = True
        self.root_id: str | None = None
        self.parent_id: str | None = None
        self.group: str | None = None
        self.headers: dict[str, Any] = {}
        self.ignore_result = False
        self.time_limit: float | None = None
        self.soft_time_limit: float | None = None
        self.content_type: str | None = None
        self.acks_late = False
        # Set on a copy of a task that an exchange sent to several queues.
        self.copy_id: str | None = None
        # What follows the task, as signature dicts: the links to call with its result
        # (``link``), the errbacks (``link_error``), the rest of its chain.
        self.callbacks: list[Any] | None = None
        self.errbacks: list[Any] | None = None
        self.chain: list[Any] | None = None
        # [chord body id, index] when the task is part of a chord's header; the same for
        # a link before the last of a chain that is a part (``chord_chain``).
        self.chord: list[Any] | None = None
        self.chord_chain: list[Any] | None = None
        # Set by ``Task.replace``: the task's result is to be its replacement's.
        self.replaced = False
        self.__dict__.update(fields)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __repr__(self) -> str:
        return f"<Request {self.task}[{self.id}]>"


class Task:
    """Base of every task. Subclass ``app.Task`` and define ``run``, or use ``@app.task``."""

    app: ClassVar[TaskApp | None] = None
    name: ClassVar[str | None] = None
    abstract: ClassVar[bool] = True
    typing: ClassVar[bool] = True
    serializer: ClassVar[str | None] = None
    max_retries: ClassVar[int | None] = 3
    default_retry_delay: ClassVar[float] = 180
    autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    dont_autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: ClassVar[bool | float] = False
    retry_backoff_max: ClassVar[float] = 600
    retry_jitter: ClassVar[bool] = True
    ignore_result: ClassVar[bool | None] = None
    track_started: ClassVar[bool | None] = None
    acks_late: ClassVar[bool | None] = None
    reject_on_worker_lost: ClassVar[bool | None] = None
    max_redeliveries: ClassVar[int | None] = None
    rate_limit: ClassVar[str | float | None] = None
    time_limit: ClassVar[float | None] = None
    soft_time_limit: ClassVar[float | None] = None
    expires: ClassVar[float | None] = None
    queue: ClassVar[str | None] = None
    exchange: ClassVar[str | None] = None
    routing_key: ClassVar[str | None] = None
    priority: ClassVar[int | None] = None
    throws: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "abstract" not in cls.__dict__:
            cls.abstract = False
        check_time_limits(cls.soft_time_limit, cls.time_limit, cls.__name__)
        if cls.app is not None and not cls.abstract and cls.run is not Task.run:
            cls.app.register_task_class(cls)

    def __init__(self) -> None:
        self._local = threading.local()

    # -- the request context -------------------------------------------------------------

    @property
    def request_stack(self) -> list[Request]:
        # A subclass's own __init__ need not call this class's (Celery's tasks need not).
        local = self.__dict__.get("_local")
        if local is None:
            local = self.__dict__.setdefault("_local", threading.local())
        try:
            return local.stack  # type: ignore[no-any-return]
        except AttributeError:
            local.stack = []
            return local.stack  # type: ignore[no-any-return]

    @property
    def request(self) -> Request:
        stack = self.request_stack
        return stack[-1] if stack else Request(task=self.name)

    def push_request(self, request: Request) -> None:
        self.request_stack.append(request)

    def pop_request(self) -> None:
        self.request_stack.pop()

    # -- the body -----------------------------------------------------------------------

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"task {self.name} does not define run()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    # -- calling ------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task with these arguments: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> AsyncResult:
        """Send the task to the router; returns once the router has accepted it."""
        app = self._app()
        if self.typing:
            self._check_arguments(args or (), kwargs or {})
        if app.settings.task_always_eager:
            return self.apply(args, kwargs, **options)
        return app.send_task(self.name or "", args, kwargs, _task=self, **options)

    def apply(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              task_id: str | None = None, retries: int = 0, throw: bool | None = None,
              **options: Any) -> EagerResult:
        """Run the task here and now, as a worker would, and return its result."""
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        task_id = task_id or new_id()
        parent = current_request()
        root_id = options.get("root_id") or (
            (parent.root_id or parent.id) if parent is not None else None) or task_id
        parent_id = options.get("parent_id") or (parent.id if parent is not None else None)
        request = Request(id=task_id, task=self.name, args=args, kwargs=kwargs,
                          retries=retries, is_eager=True, called_directly=False,
                          headers=options.get("headers") or {}, root_id=root_id,
                          parent_id=parent_id, group=options.get("group_id"),
                          delivery_info={"is_eager": True},
                          callbacks=as_list(options.get("link")) or None,
                          errbacks=as_list(options.get("link_error")) or None)
        outcome = trace(self, request, args, kwargs)
        self._follow_eagerly(request, outcome)
        result = EagerResult(task_id, outcome.retval, outcome.state, outcome.traceback,
                             app=self._app())
        if throw and outcome.state == states.FAILURE and isinstance(outcome.retval, BaseException):
            raise outcome.retval
        return result

    def _follow_eagerly(self, request: Request, outcome: Any) -> None:
        """Run here what follows an eager call: its callbacks, or its errbacks."""
        app = self._app()
        if outcome.state == states.SUCCESS:
            for follow_up in follow.callbacks(request, outcome.retval, app):
                follow_up.run()
        elif outcome.state == states.FAILURE and isinstance(outcome.retval, BaseException):
            here, sent = follow.errbacks(request, outcome.retval, outcome.traceback, app)
            for call in here:
                call()
            for follow_up in sent:
                follow_up.run()

    def _check_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        # Worked out once per task class.
        cls = type(self)
        check: _ArgumentCheck | None = cls.__dict__.get("_zq_arguments")
        if check is None:
            try:
                check = _ArgumentCheck(inspect.signature(self.run))
            except (TypeError, ValueError):  # the callable has no signature
                check = _ArgumentCheck(None)
            setattr(cls, "_zq_arguments", check)
        try:
            check.check(args, kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self.name or "", args, kwargs, app=self._app())

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self.name or "", args, kwargs, immutable=True, app=self._app())

    def signature(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                  **options: Any) -> Signature:
        immutable = bool(options.pop("immutable", False))
        return Signature(self.name or "", args or (), kwargs or {}, options=options,
                         immutable=immutable, app=self._app())

    subtask = signature

    def map(self, it: Any) -> xmap:
        """One task message that calls this task with each item of ``it`` on a worker."""
        return xmap(self.s(), it, app=self._app())

    def starmap(self, it: Any) -> xstarmap:
        """As :meth:`map`, each item being the arguments."""
        return xstarmap(self.s(), it, app=self._app())

    def chunks(self, it: Any, n: int) -> chunks:
        """``it`` (argument tuples) split into parts of ``n``, one message per part."""
        return chunks(self.s(), it, n, app=self._app())

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return self._app().AsyncResult(task_id)

    # -- inside a running task ----------------------------------------------------------

    def retry(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True, eta: Any = None,
              countdown: float | None = None, max_retries: int | None = None,
              **options: Any) -> Retry:
        """Send this task again with the same id, counting a retry; raises :class:`Retry`.

        Past ``max_retries`` it raises ``exc``, or :class:`MaxRetriesExceededError` when no
        ``exc`` was given.
        """
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            raise exc if exc is not None else Retry("Task can be retried", None)
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}")
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        new_args = request.args if args is None else args
        new_kwargs = request.kwargs if kwargs is None else kwargs
        when = countdown if countdown is not None else None
        if request.is_eager:
            outcome_result = self.apply(new_args, new_kwargs, task_id=request.id,
                                        retries=request.retries + 1)
            retry = Retry(exc=exc, when=when)
            retry.eager_result = outcome_result
            if throw:
                raise retry
            return retry
        delivery = request.delivery_info or {}
        send_options = {
            "task_id": request.id, "retries": request.retries + 1, "countdown": countdown,
            "eta": eta, "queue": delivery.get("queue"), "priority": delivery.get("priority"),
            "headers": request.headers, "root_id": request.root_id,
            "parent_id": request.parent_id, "expires": request.expires,
            # A copy of a task routed to several queues retries as that copy, in whatever
            # queue it is sent to.
            "copy_id": request.copy_id,
            "time_limit": request.time_limit, "soft_time_limit": request.soft_time_limit,
            "ignore_result": request.ignore_result, "serializer": None,
            "_content_type": request.content_type,
            # What follows the task follows its retry; a chord part stays one.
            "link": request.callbacks, "link_error": request.errbacks, "chain": request.chain,
            "group_id": request.group,
            "chord": request.chord[0] if request.chord else None,
            "chord_index": request.chord[1] if request.chord else None,
            "chord_chain": request.chord_chain,
        }
        send_options.update(options)
        self._app().send_task(self.name or "", new_args, new_kwargs, _task=self, **send_options)
        retry = Retry(exc=exc, when=when)
        if throw:
            raise retry
        return retry

    def replace(self, sig: Any) -> Any:
        """Replace this running task with ``sig``: its result becomes the replacement's,
        and what was to follow it (its ``link`` callbacks and errbacks, the rest of its
        chain) follows the replacement. A group is closed with a task that returns its
        results as one list. Raises :class:`Ignore` (the worker records no result of its
        own: the router relays the replacement's). Run eagerly, it runs the replacement
        here and returns its value."""
        request = self.request
        if request.called_directly:
            raise RuntimeError("replace() is for a task the worker runs, not a direct call")
        app = self._app()
        replacement = signature(sig, app=app)
        if replacement.kind == "group":
            replacement = chord(replacement, Signature(ACCUMULATE_TASK, app=app), app=app)
        if request.is_eager:
            value = replacement.apply().get(disable_sync_subtasks=False)
            return value
        _relay_to(replacement, request.id or "")
        for callback in request.callbacks or ():
            replacement.link(signature(callback, app=app))
        for errback in request.errbacks or ():
            replacement.link_error(signature(errback, app=app))
        options: dict[str, Any] = {"parent_id": request.id,
                                   "root_id": request.root_id or request.id}
        if request.chain:
            options["chain"] = list(request.chain)
        if replacement.kind in SINGLE_MESSAGE:
            replacement.options.setdefault("task_id", derived_id(request.id or "", "replace"))
        replacement.apply_async(**options)
        request.replaced = True
        raise Ignore("replaced by a new task")

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Record a state (a custom one such as ``PROGRESS`` too) with ``meta`` for a task."""
        request = self.request
        task_id = task_id or request.id
        if task_id is None:
            raise ValueError("update_state() needs a task_id outside a running task")
        self._app().emit_state(task_id, state or states.PENDING, meta,
                                retries=request.retries if task_id == request.id else 0,
                                name=self.name)

    # -- handlers, overridden by subclasses ---------------------------------------------

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Run by the worker before the task starts."""

    def on_success(self, retval: Any, task_id: str, args: Sequence[Any],
                   kwargs: dict[str, Any]) -> None:
        """Run by the worker when the task succeeded."""

    def on_failure(self, exc: BaseException, task_id: str, args: Sequence[Any],
                   kwargs: dict[str, Any], einfo: Any) -> None:
        """Run by the worker when the task failed."""

    def on_retry(self, exc: BaseException, task_id: str, args: Sequence[Any],
                 kwargs: dict[str, Any], einfo: Any) -> None:
        """Run by the worker when the task is to be retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Sequence[Any],
                     kwargs: dict[str, Any], einfo: Any) -> None:
        """Run by the worker after the task returned, whatever its state."""

    # -- helpers ------------------------------------------------------------------------

    def _app(self) -> TaskApp:
        if self.app is None:
            raise RuntimeError(f"task {type(self).__name__} is not bound to an App")
        return self.app

    def option(self, name: str, setting: str) -> Any:
        """The task's option ``name``, or the app-wide setting when the task leaves it unset."""
        value = getattr(self, name)
        if value is None and self.app is not None:
            return getattr(self.app.settings, setting)
        return value

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"
