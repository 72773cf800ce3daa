"""The settings of an App: one frozen object, Celery's names, units in the rest."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError
from .security import ClientKeys, client_keys

# The router's address where nothing names one, and the largest task message (arguments)
# the router takes; the router's command line defaults to the same.
DEFAULT_ROUTER = "tcp://127.0.0.1:5555"
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


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
    task_acks_late: bool = False
    task_reject_on_worker_lost: bool | None = None
    task_default_queue: str = "celery"
    task_default_exchange: str = ""
    task_default_routing_key: str | None = None
    task_default_priority: int | None = None
    task_default_rate_limit: str | float | None = None
    task_time_limit: float | None = None
    task_soft_time_limit: float | None = None
    task_max_redeliveries: int = 3
    task_routes: Any = None
    task_queues: Any = None
    task_always_eager: bool = False
    publish_timeout_s: float = 10.0
    # CURVE: this side's secret key file and the router's public key (file or z85 text).
    curve_secret_key: str | None = None
    curve_server_key: str | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

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


def _coerce(name: str, value: Any) -> Any:
    if name == "result_expires" and isinstance(value, dt.timedelta):
        return value.total_seconds()
    if name in ("accept_content", "result_accept_content") and value is not None:
        if isinstance(value, str):
            value = [value]
        return tuple(value)
    return value


def from_mapping(values: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """Build settings from keyword values, with a clear error for a name that is not one."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(_FIELDS))}")
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    return dataclasses.replace(base or Settings(), **coerced)
