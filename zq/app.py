"""The App: settings, the task registry, the ``task`` decorator, and sending tasks."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import zmq

from . import _current, config, protocol, serialization, states
from .client import RouterClient
from .results_client import Pending, ResultsClient
from .config import Conf, Settings
from .control import Control
from .errors import ConfigurationError, PublishError, ZqError
from .events import Events
from .protocol import Cmd
from .result import AsyncResult, value_of
from .routing import TaskRoutes, declarations
from .canvas import register_builtins
from .task import Task, check_time_limits, current_request
from .utils import new_id, to_timestamp

logger = logging.getLogger("zq.app")

# Tasks per SUBMIT when sending a group: large enough to amortize the round trip, small
# enough that one message stays well under max_message_size.
_BATCH_SIZE = 500

StateSink = Callable[[dict[str, Any]], None]


class _Sockets:
    """One thread's sockets. When the thread ends (its thread-local data goes), what it
    sent without waiting is waited for first, as at ``close``: a thread that sends and
    exits loses nothing in silence."""

    def __init__(self) -> None:
        self.router: RouterClient | None = None
        self.results: ResultsClient | None = None
        self.flush_timeout_s = 0.0
        self._pid = os.getpid()

    def __del__(self) -> None:
        if os.getpid() != self._pid:
            return  # a forked child's copy: the parent's sockets are not the child's
        try:
            if self.router is not None and self.router.unconfirmed:
                self.router.flush(self.flush_timeout_s)
        except Exception as exc:  # never a traceback from a finalizer
            logger.error("a thread ended with tasks the router did not confirm: %s", exc)
        for client in (self.router, self.results):
            if client is not None:
                client.close()


class _Clients(threading.local):
    """An App's sockets in one thread; a forked child starts with none (see _after_fork)."""

    def __init__(self) -> None:
        self.pending: weakref.WeakValueDictionary[str, Pending] = (
            weakref.WeakValueDictionary())
        self.sockets = _Sockets()

    @property
    def router(self) -> RouterClient | None:
        return self.sockets.router

    @router.setter
    def router(self, client: RouterClient | None) -> None:
        self.sockets.router = client

    @property
    def results(self) -> ResultsClient | None:
        return self.sockets.results

    @results.setter
    def results(self, client: ResultsClient | None) -> None:
        self.sockets.results = client


# Options that travel in a task's header as they are (the canvas's): what follows the
# task, its group, and its place in a chord.
_PASSED_ON = frozenset({"link", "link_error", "chain", "group_id", "copy_id", "chord",
                        "chord_index", "chord_size", "chord_immutable", "chord_chain"})


def _flush_at_exit(app: App) -> None:
    """At interpreter exit, wait for the confirmations of what the main thread sent
    without waiting (and log what was refused), as ``close`` does."""
    ref = weakref.ref(app)

    def flush() -> None:
        alive = ref()
        if alive is None or threading.current_thread() is not threading.main_thread():
            return
        router = alive._clients.router  # a forked child's were reset at the fork
        if router is not None and router.unconfirmed:
            try:
                alive.close()
            except Exception as exc:  # never a traceback at exit
                logger.error("closing at exit: %s", exc)

    atexit.register(flush)


class App:
    """A zq application: where tasks are registered and from where they are sent.

    ``router`` is the one address clients and workers need; it defaults to ``$ZQ_ROUTER``,
    else ``tcp://127.0.0.1:5555``. Other keywords are settings (see :class:`zq.config.Settings`).
    The App made last is the one results and signatures made without an App use.
    """

    def __init__(self, main: str | None = None, *, router: str | None = None,
                 task_cls: type[Task] | None = None, **settings: Any):
        router = router or os.environ.get("ZQ_ROUTER") or config.DEFAULT_ROUTER
        for setting, variable in (("curve_secret_key", "ZQ_CURVE_SECRET_KEY"),
                                  ("curve_server_key", "ZQ_CURVE_SERVER_KEY")):
            if setting not in settings and os.environ.get(variable):
                settings[setting] = os.environ[variable]
        self.main = main
        self._routes: TaskRoutes | None = None
        self.settings = config.from_mapping({**settings, "router": router})
        self.tasks: dict[str, Task] = {}
        base = task_cls or Task
        if not (isinstance(base, type) and issubclass(base, Task)):
            raise ConfigurationError(f"task_cls must be a subclass of zq.Task, not {base!r}")
        self.Task: type[Task] = type("Task", (base,), {
            "app": self, "abstract": True, "__module__": base.__module__})
        self._clients = _Clients()
        _APPS[id(self)] = self
        self._state_sink: StateSink | None = None
        self.control = Control(self)
        register_builtins(self)
        _current.set_current_app(self)
        _flush_at_exit(self)

    @property
    def settings(self) -> Settings:
        """The App's settings: one frozen object, replaced whole when a setting changes."""
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._settings = settings
        self._routes = None

    @property
    def conf(self) -> Conf:
        """The settings as Celery's ``app.conf``: ``app.conf.task_acks_late = True``."""
        return Conf(self)

    # -- the registry -------------------------------------------------------------------

    def gen_task_name(self, name: str, module: str) -> str:
        """The default name of a task: ``module.name`` (``main`` stands in for __main__)."""
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""
        if len(args) == 1 and callable(args[0]) and not options:
            return self._task_from_fun(args[0])
        if args:
            raise TypeError("@app.task takes keyword options only: @app.task(name=...)")

        def decorate(fun: Callable[..., Any]) -> Task:
            return self._task_from_fun(fun, **options)
        return decorate

    def _task_from_fun(self, fun: Callable[..., Any], name: str | None = None,
                       base: type[Task] | None = None, bind: bool = False,
                       **options: Any) -> Task:
        base = base or self.Task
        if base.app is not self:
            base = type(base.__name__, (base,), {"app": self, "abstract": True,
                                                 "__module__": base.__module__})
        name = name or self.gen_task_name(fun.__name__, fun.__module__)
        for key in ("autoretry_for", "dont_autoretry_for", "throws"):
            if key in options and not isinstance(options[key], tuple):
                options[key] = tuple(options[key])
        attrs = {"name": name, "run": fun if bind else staticmethod(fun),
                 "__doc__": fun.__doc__, "__module__": fun.__module__,
                 "__qualname__": fun.__qualname__, "__wrapped__": fun, **options}
        type(fun.__name__, (base,), attrs)
        return self.tasks[name]

    def register_task_class(self, cls: type[Task]) -> Task:
        """Register the task class ``cls``, bound to this App, under its own name, else
        under ``module.ClassName``: what defining a subclass of ``app.Task`` does."""
        if "name" not in cls.__dict__ or cls.__dict__["name"] is None:
            cls.name = self.gen_task_name(cls.__name__, cls.__module__)
        task = self.tasks[cls.name or ""] = cls()
        return task

    def register_task(self, task: Task | type[Task]) -> Task:
        """Register a task instance or class made outside the decorator (Celery's API).

        An instance is bound to this App and registered itself, as Celery binds it."""
        if not isinstance(task, type):
            if task.name is None:
                setattr(task, "name", self.gen_task_name(type(task).__name__,
                                                         type(task).__module__))
            setattr(task, "app", self)
            self.tasks[task.name or ""] = task
            return task
        cls = task
        if cls.app is not self:
            cls = type(cls.__name__, (cls,), {"app": self, "__module__": cls.__module__,
                                               "name": cls.name})
        elif cls.name not in self.tasks:
            self.register_task_class(cls)
        return self.tasks[cls.name or ""]

    # -- sending ------------------------------------------------------------------------

    def send_task(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: dict[str, Any] | None = None, *,
                  publish_timeout_s: float | None = None, confirm: bool | None = None,
                  **options: Any) -> AsyncResult:
        """Send the task ``name`` without importing it.

        Returns as soon as the message is on its way; the router's confirmation is
        collected later, and a refusal (``QueueFull``, ``NoRoute``, a payload refused, no
        router within ``publish_timeout_s``) is raised by the result's ``get()`` or
        ``accepted()``, or by :meth:`flush`. With ``confirm=True`` (or the setting
        ``publish_confirm``) it returns only once the router has accepted the task.

        ``options`` are ``apply_async``'s: countdown, eta, task_id, expires, serializer,
        queue, exchange, routing_key, priority, ignore_result, headers, time_limit,
        soft_time_limit, mandatory, immediate.
        """
        header, body = self.task_message(name, args, kwargs, **options)
        timeout_s = publish_timeout_s if publish_timeout_s is not None \
            else self.settings.publish_timeout_s
        if confirm or (confirm is None and self.settings.publish_confirm):
            self.router_client().submit(header, body, timeout_s)
        else:
            self.router_client().publish(header, body, timeout_s)
        if header.get("ignore_result"):
            # Nothing will be stored: get() returns None at once, as in Celery.
            return AsyncResult(header["id"], app=self, task_name=name, ignored=True)
        return self.track(AsyncResult(header["id"], app=self, task_name=name))

    def published(self, task_id: str, timeout_s: float | None = None) -> None:
        """Return once the router confirmed ``task_id`` (at once for a task this thread
        did not send without waiting); raise why it refused it."""
        router = self._local().router
        if router is not None:
            # Everything sent before it too: a result can hang on a task sent earlier
            # (the first link of its chain), whose refusal must not go unnoticed.
            router.settle(timeout_s, quiet=True)
            router.confirmed(task_id, timeout_s)

    def sent_here(self, task_id: str) -> bool:
        """Whether this thread sent ``task_id`` and still tracks it (unconfirmed, or its
        result not collected)."""
        local = self._local()
        return task_id in local.pending or (
            local.router is not None and task_id in local.router.unconfirmed)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the router confirmed every task this thread sent without waiting;
        raise the first refusal. Run at interpreter exit for the main thread."""
        router = self._local().router
        if router is not None:
            router.flush(timeout_s)

    def track(self, result: AsyncResult) -> AsyncResult:
        """Remember a result this thread sent, so that one wait covers all of them: the
        results actor pushes each as it becomes ready, whichever is asked for first."""
        self._local().pending[result.id] = result
        return result

    def task_message(self, name: str, args: Sequence[Any] | None = None,
                      kwargs: dict[str, Any] | None = None, *, countdown: float | None = None,
                      eta: Any = None, task_id: str | None = None, expires: Any = None,
                      serializer: str | None = None, queue: str | None = None,
                      exchange: str | None = None, routing_key: str | None = None,
                      priority: int | None = None, ignore_result: bool | None = None,
                      headers: dict[str, Any] | None = None, retries: int = 0,
                      root_id: str | None = None, parent_id: str | None = None,
                      time_limit: float | None = None, soft_time_limit: float | None = None,
                      mandatory: bool = False, immediate: bool = False,
                      _task: Task | None = None, _content_type: str | None = None,
                      **options: Any) -> tuple[dict[str, Any], bytes]:
        """The header and body of a task message, with every option resolved: what
        ``send_task`` sends, for sending many at once with :meth:`send_tasks`.

        An option neither the call nor the task gives takes the App's setting, as
        ``time_limit`` takes ``task_time_limit``.
        """
        if not isinstance(name, str) or not name:
            raise TypeError("send_task() needs a task name")
        if args is not None and not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        settings = self.settings
        task = _task if _task is not None else self.tasks.get(name)
        def opt(attr: str, default: Any) -> Any:
            """The task's own option where it sets one, else ``default``."""
            value = getattr(task, attr, None) if task is not None else None
            return default if value is None else value

        serializer = serializer or opt("serializer", settings.task_serializer)
        if _content_type is not None and serializer is None:
            serializer = _content_type
        content_type, body = serialization.dumps([list(args or ()), dict(kwargs or {})],
                                                 serializer)
        if len(body) > settings.max_message_size:
            raise PublishError(f"task {name} has {len(body)} bytes of arguments, over "
                               f"max_message_size ({settings.max_message_size})")
        task_id = task_id or new_id()
        parent = current_request()
        if parent is not None and parent.id and parent.id != task_id:
            root_id = root_id or parent.root_id or parent.id
            parent_id = parent_id or parent.id
        if eta is None and countdown is not None:
            eta = time.time() + float(countdown)
        if expires is None:
            expires = opt("expires", None)
        route = self._router().route(name, task, queue=queue, exchange=exchange,
                                     routing_key=routing_key, priority=priority)
        header: dict[str, Any] = {"id": task_id, "task": name, "ct": content_type}
        optional = {
            "retries": retries or None,
            "eta": to_timestamp(eta),
            "expires": to_timestamp(expires, relative=True),
            "queue": route.queue, "exchange": route.exchange or None,
            "rk": route.routing_key, "priority": route.priority,
            "ignore_result": ignore_result if ignore_result is not None
            else opt("ignore_result", settings.task_ignore_result) or None,
            "headers": headers or None, "root_id": root_id or None,
            "parent_id": parent_id or None,
            "acks_late": opt("acks_late", settings.task_acks_late) or None,
            "reject_on_worker_lost": opt("reject_on_worker_lost",
                                         settings.task_reject_on_worker_lost),
            "max_redeliveries": opt("max_redeliveries", None),
            "time_limit": time_limit or opt("time_limit", settings.task_time_limit),
            "soft_time_limit": soft_time_limit or opt("soft_time_limit",
                                                      settings.task_soft_time_limit),
            "rate_limit": opt("rate_limit", settings.task_default_rate_limit),
            "mandatory": mandatory or None, "immediate": immediate or None,
        }
        check_time_limits(optional["soft_time_limit"], optional["time_limit"], name)
        header.update((k, v) for k, v in optional.items() if v is not None)
        for key, value in options.items():
            if key in _PASSED_ON and value is not None and value != []:
                header[key] = value
        return header, body

    def send_tasks(self, messages: Sequence[tuple[dict[str, Any], bytes]],
                   publish_timeout_s: float | None = None) -> None:
        """Submit prepared task messages in batches: one round trip per batch."""
        timeout_s = publish_timeout_s if publish_timeout_s is not None \
            else self.settings.publish_timeout_s
        client = self.router_client()
        for start in range(0, len(messages), _BATCH_SIZE):
            client.submit_many(list(messages[start:start + _BATCH_SIZE]), timeout_s)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        """The result of the task ``task_id``, asked for from this App's router."""
        return AsyncResult(task_id, app=self)

    @property
    def events(self) -> Events:
        """Celery's ``app.events``: ``Receiver`` and ``State`` (docs/events.md)."""
        return Events(self)

    def watch(self, task_ids: Sequence[str] | str | None = None,
              timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield state changes as they happen: first the current state of what is watched.

        Each change is a dict with ``id``, ``state``, ``name``, ``retries``, ``ts``, ``seq``,
        ``version`` and ``info`` (the result, the exception, or a custom state's meta).

        With ``task_ids`` only those tasks are watched (with their current state first);
        without, every task (the current state of the unfinished ones first).
        """
        if isinstance(task_ids, str):
            task_ids = [task_ids]
        stream = self.results_client().watch(list(task_ids) if task_ids else None, timeout_s)
        accept = self.settings.result_content_types
        return (dict(event, info=value_of(event, accept, quiet=True)) for event in stream)

    # -- the sockets of this thread -----------------------------------------------------

    def _local(self) -> _Clients:
        return self._clients

    def router_client(self) -> RouterClient:
        """This thread's connection to the router (made on first use, with the App's
        queues declared to it)."""
        local = self._local()
        if local.router is None:
            client = RouterClient(zmq.Context.instance(), self.settings.router,
                                  self.settings.curve_keys(),
                                  window=self.settings.publish_window)
            queues = declarations(self.settings.task_queues, self.settings)
            if queues:
                client.call(Cmd.CONTROL, {"op": "declare", "queues": queues},
                            self.settings.publish_timeout_s)
            local.router = client
            local.sockets.flush_timeout_s = self.settings.publish_timeout_s
        return local.router

    def results_client(self) -> ResultsClient:
        """This thread's connection to the results actor (its address is asked of the
        router on first use)."""
        local = self._local()
        if local.results is None:
            welcome = self.router_client().call(Cmd.HELLO, {}, self.settings.publish_timeout_s)
            local.results = ResultsClient(zmq.Context.instance(), welcome["results"],
                                          self.settings.router, local.pending,
                                          self.settings.curve_keys(),
                                          router_client=self.router_client())
        return local.results

    def close(self) -> None:
        """Close this thread's sockets (they are made again on next use)."""
        local = self._local()
        if local.router is not None and local.router.unconfirmed:
            # Not dropped in silence: what is unconfirmed is waited for (and sent again)
            # for up to publish_timeout_s, and what still fails is logged.
            try:
                local.router.flush(self.settings.publish_timeout_s)
            except ZqError as exc:
                logger.error("closing with tasks the router did not confirm: %s", exc)
        for client in (local.router, local.results):
            if client is not None:
                client.close()
        local.router = local.results = None

    def _router(self) -> TaskRoutes:
        if self._routes is None:
            self._routes = TaskRoutes(self.settings)
        return self._routes

    @property
    def state_sink(self) -> StateSink | None:
        """Where :meth:`emit_state` sends state events instead of the results actor: a
        worker sets it to its own connection, so a task's ``update_state`` goes there."""
        return self._state_sink

    @state_sink.setter
    def state_sink(self, sink: StateSink | None) -> None:
        self._state_sink = sink

    def emit_state(self, task_id: str, state: str, meta: Any, *, retries: int = 0,
                   name: str | None = None) -> None:
        """Record ``state`` with ``meta`` for the task ``task_id`` (``update_state``)."""
        content_type, body = serialization.dumps(meta, self.settings.result_serializer)
        event = protocol.state_event(task_id, state, retries=retries, name=name,
                                     content_type=content_type, body=body)
        if state in states.READY_STATES:
            event["ts"] = time.time()
        if self._state_sink is not None:
            self._state_sink(event)
        else:
            self.results_client().emit([event])

    def __repr__(self) -> str:
        return f"<zq.App {self.main or '__main__'} router={self.settings.router}>"


_current.set_default_factory(App)

# Every App alive, for _after_fork (by id: an App subclass need not be hashable).
_APPS: weakref.WeakValueDictionary[int, App] = weakref.WeakValueDictionary()


def _after_fork() -> None:
    """In a forked child, every App makes sockets of its own on next use: the parent's are
    left as they are (ZeroMQ sockets cannot be shared with a child, and closing them here
    could disturb the parent's), and so are the results the parent waits for. Done once at
    the fork rather than by comparing pids on every call."""
    for app in list(_APPS.values()):
        app._clients = _Clients()


os.register_at_fork(after_in_child=_after_fork)
