"""What a supervisor tells the router of its host and actors, for ``zq inspect``.

An actor writes its own facts (when its task began, which task, how many of each name it
ran) into memory shared with its supervisor, as a length and a msgpack map; the supervisor
reads them at each heartbeat, adds what it sees from outside (pid, resource use), and
sends the lot in the heartbeat's ``pool``. A read that catches a write half done is
dropped (the facts of the heartbeat before stand).
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from typing import Any, Protocol

import msgpack
import psutil

from ..config import Settings
from .config import WorkerConfig

logger = logging.getLogger("zq.actor")

_LENGTH = struct.Struct(">I")
FACTS_SIZE = 16 * 1024


class SharedRaw(Protocol):
    """A shared ``c`` array of FACTS_SIZE bytes (``multiprocessing`` ``Array``)."""

    raw: bytes


def write(shared: SharedRaw | None, facts: dict[str, Any]) -> None:
    """Publish an actor's facts; what would not fit is left out (the task counts)."""
    if shared is None:
        return
    data = msgpack.packb(facts)
    if _LENGTH.size + len(data) > FACTS_SIZE:
        data = msgpack.packb({k: v for k, v in facts.items() if k != "processed"})
    shared.raw = _LENGTH.pack(len(data)) + data


def read(shared: SharedRaw) -> dict[str, Any] | None:
    raw = bytes(shared.raw)
    (length,) = _LENGTH.unpack_from(raw)
    if not 0 < length <= FACTS_SIZE - _LENGTH.size:
        return None
    try:
        facts = msgpack.unpackb(raw[_LENGTH.size:_LENGTH.size + length])
    except Exception:
        return None
    return facts if isinstance(facts, dict) else None


def rusage(process: psutil.Process) -> dict[str, float]:
    """An actor process's resource use, as Celery's stats name it."""
    try:
        with process.oneshot():
            cpu = process.cpu_times()
            memory = process.memory_info()
    except psutil.Error:
        return {}
    return {"utime": cpu.user, "stime": cpu.system, "maxrss": memory.rss // 1024}


def settings_conf(settings: Settings) -> dict[str, Any]:
    """The app's settings as ``inspect conf`` shows them: plain values, no keys."""
    conf: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if "key" in field.name or "secret" in field.name:
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            conf[field.name] = value
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            conf[field.name] = list(value)
    return conf


def worker_conf(c: WorkerConfig) -> dict[str, Any]:
    """What ``inspect conf`` shows of how a host's workers were started."""
    return {"app": c.app, "concurrency": c.concurrency, "queues": list(c.queues),
            "prefetch": c.prefetch, "time_limit": c.time_limit_s,
            "soft_time_limit": c.soft_time_limit_s,
            "max_tasks_per_child": c.max_tasks_per_child,
            "max_memory_per_child": c.max_memory_per_child_kb,
            "shutdown_timeout": c.shutdown_timeout_s,
            "heartbeat_interval": c.heartbeat_interval_s,
            "autoscale": list(c.autoscale) if c.autoscale else None}
