"""The settings of an App: one frozen object, Celery's names, units in the rest.

``app.conf`` is a :class:`Conf`, a mutable view that reads the App's settings and, on
``app.conf.X = value``, ``app.conf["X"] = value`` or ``update()``, replaces them with a
new frozen object, validated the same way whichever way they are set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from ._address import check_endpoint
from .errors import ConfigurationError
from .protocol import EXCHANGE_TYPES, MAX_MESSAGE_SIZE
from .security import ClientKeys, client_keys

# The router's address where nothing names one, and the largest task message (arguments)
# the router takes; the router's command line defaults to the same.
DEFAULT_ROUTER = "tcp://127.0.0.1:5555"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """What an App, its workers and its clients are configured with.

    Names that a Celery user sets keep Celery's spelling; the others carry their unit.
    ``result_expires`` is kept for ported configurations, but the results actor belongs to
    the router: ``zq router --result-expires`` is what decides.
    """

    router: str = DEFAULT_ROUTER
    task_serializer: str = "msgpack"
    result_serializer: str = "msgpack"
    accept_content: tuple[str, ...] = ("msgpack", "json")
    result_accept_content: tuple[str, ...] | None = None
    result_expires: float = 86400.0
    task_ignore_result: bool = False
    task_track_started: bool = False
    # A task accepted and not started reads SENT instead of Celery's PENDING.
    task_track_sent: bool = False
    # Celery's event settings (docs/events.md): a worker sends task-started for every
    # task (as with -E); task-sent the router builds anyway, so the other only exists
    # for ported code.
    worker_send_task_events: bool = False
    task_send_sent_event: bool = False
    task_acks_late: bool = False
    task_reject_on_worker_lost: bool | None = None
    task_default_queue: str = "celery"
    # Unset (as by default), a task nothing routes goes to task_default_queue; set, it goes
    # through this exchange with this key (see zq.routing).
    task_default_exchange: str = ""
    task_default_exchange_type: str = "direct"
    task_default_routing_key: str | None = None
    task_default_priority: int | None = None
    task_default_rate_limit: str | float | None = None
    # The hard and soft time limits of a task that sets none and is called with none.
    task_time_limit: float | None = None
    task_soft_time_limit: float | None = None
    task_routes: Any = None
    task_queues: Any = None
    task_always_eager: bool = False
    publish_timeout_s: float = 10.0
    # apply_async returns once the task is on its way; the router's confirmations are
    # collected in the background, at most this many outstanding per thread. With
    # ``publish_confirm`` (or ``confirm=True`` on a call) it returns once the router has
    # accepted the task (and, with --journal-fsync, synced it).
    publish_confirm: bool = False
    publish_window: int = 1000
    # CURVE: this side's secret key file and the router's public key (file or z85 text).
    curve_secret_key: str | None = None
    curve_server_key: str | None = None
    max_message_size: int = MAX_MESSAGE_SIZE

    def replace(self, **changes: Any) -> Settings:
        return from_mapping(changes, base=self)

    @property
    def result_content_types(self) -> tuple[str, ...]:
        return self.result_accept_content or self.accept_content

    def curve_keys(self) -> ClientKeys | None:
        """The CURVE client keys, or None when CURVE is not configured."""
        if not self.curve_secret_key and not self.curve_server_key:
            return None
        if not (self.curve_secret_key and self.curve_server_key):
            raise ConfigurationError("CURVE needs both curve_secret_key and curve_server_key")
        return client_keys(self.curve_secret_key, self.curve_server_key)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}

# Settings that zq has no place for on an App, and where what they did lives instead.
_ELSEWHERE = {
    "task_max_redeliveries": "the redelivery cap of acks_late tasks is the router's "
                             "--max-redeliveries option (a task may lower it with its own "
                             "max_redeliveries option)",
}


def _coerce(name: str, value: Any) -> Any:
    if name == "router":
        return check_endpoint(value)
    if name == "task_default_exchange_type" and value not in EXCHANGE_TYPES:
        raise ConfigurationError(f"task_default_exchange_type must be one of "
                                 f"{', '.join(EXCHANGE_TYPES)}, not {value!r}")
    if name == "result_expires" and isinstance(value, dt.timedelta):
        return value.total_seconds()
    if name in ("accept_content", "result_accept_content") and value is not None:
        if isinstance(value, str):
            value = [value]
        return tuple(value)
    return value


def from_mapping(values: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """Build settings from keyword values, with a clear error for a name that is not one."""
    moved = sorted(set(values) & set(_ELSEWHERE))
    if moved:
        raise ConfigurationError(f"{moved[0]} is not an App setting: {_ELSEWHERE[moved[0]]}")
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(_FIELDS))}")
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    return dataclasses.replace(base or Settings(), **coerced)


class Configurable(Protocol):
    """What has settings that ``Conf`` may replace (an App)."""

    settings: Settings


class Conf:
    """``app.conf``: the App's settings by attribute or key, changed as in Celery.

    Reading gives the current value. Assigning (``conf.task_always_eager = True``,
    ``conf["task_always_eager"] = True``) or ``update()`` validates like the App's
    constructor and replaces the App's frozen settings; an unknown name is a
    :class:`~zq.ConfigurationError`.
    """

    __slots__ = ("_owner",)

    def __init__(self, owner: Configurable):
        object.__setattr__(self, "_owner", owner)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        settings = self._owner.settings
        if name not in _FIELDS and not hasattr(type(settings), name):
            raise AttributeError(f"no setting {name!r}")
        return getattr(settings, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def __delattr__(self, name: str) -> None:
        raise ConfigurationError(f"settings cannot be deleted; set {name} to a value")

    def __getitem__(self, name: str) -> Any:
        if name not in _FIELDS:
            raise KeyError(name)
        return getattr(self._owner.settings, name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def __contains__(self, name: object) -> bool:
        return name in _FIELDS

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self._owner.settings, name) if name in _FIELDS else default

    def update(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Replace several settings at once; nothing changes if one of them is refused."""
        self._owner.settings = from_mapping({**(values or {}), **kwargs},
                                            base=self._owner.settings)

    def __repr__(self) -> str:
        return f"<Conf {self._owner.settings!r}>"
