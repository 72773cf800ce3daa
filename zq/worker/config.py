"""One configuration for ``zq workers``: the host's, from which each actor's is derived."""

from __future__ import annotations

from dataclasses import dataclass

from .._address import check_endpoint
from ..config import Settings


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
    # -E: every task's start is reported, for task-started events (docs/events.md).
    task_events: bool = False

    def __post_init__(self) -> None:
        check_endpoint(self.router)

    def for_actor(self, *, host: str, identity: bytes) -> ActorConfig:
        """The configuration of one actor process of this host."""
        return ActorConfig(worker=self, host=host, identity=identity)

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
