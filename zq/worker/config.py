"""One configuration for ``zq workers``: the host's, from which each actor's is derived."""

from __future__ import annotations

from dataclasses import dataclass

from .._address import check_endpoint
from ..config import Settings
from ..errors import ConfigurationError

# Time limits set by control, per task name: (name, soft seconds, hard seconds).
TimeLimits = tuple[tuple[str, float | None, float | None], ...]


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """What a supervisor and its actor processes run with. ``cli.py`` builds it."""

    app: str
    router: str
    concurrency: int = 2
    queues: tuple[str, ...] = ()
    prefetch: int = 1
    log_level: str = "INFO"
    heartbeat_interval_s: float = 1.0
    shutdown_timeout_s: float = 30.0
    time_limit_s: float | None = None
    soft_time_limit_s: float | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child_kb: int | None = None
    curve_secret_key: str | None = None
    curve_server_key: str | None = None
    # (max, min) actors: the supervisor adds one when all are busy and stops one after
    # a while with one to spare (Celery's --autoscale); None: a fixed pool.
    autoscale: tuple[int, int] | None = None
    # -E: every task's start is reported, for task-started events (docs/events.md).
    task_events: bool = False

    def __post_init__(self) -> None:
        check_endpoint(self.router)
        if self.autoscale is not None:
            most, least = self.autoscale
            if not 0 < least <= most:
                raise ConfigurationError(f"--autoscale {most},{least}: needs MAX >= MIN >= 1")

    def for_actor(self, *, host: str, identity: bytes, queues: tuple[str, ...] | None = None,
                  time_limits: TimeLimits = ()) -> ActorConfig:
        """The configuration of one actor process of this host (``queues`` and
        ``time_limits``: as control changed them since the host started)."""
        return ActorConfig(worker=self, host=host, identity=identity, queues=queues,
                           time_limits=time_limits)

    def settings(self, app_settings: Settings) -> Settings:
        """The app's settings with this host's own CURVE keys, when it was given some."""
        if not self.curve_secret_key:
            return app_settings
        return app_settings.replace(curve_secret_key=self.curve_secret_key,
                                    curve_server_key=self.curve_server_key)


@dataclass(frozen=True, kw_only=True)
class ActorConfig:
    """An actor process's configuration: its host's, and who it is to the router."""

    worker: WorkerConfig
    host: str
    identity: bytes
    # The queues it consumes, when control changed them (else its host's).
    queues: tuple[str, ...] | None = None
    time_limits: TimeLimits = ()
