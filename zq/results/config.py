"""What the results actor is started with, and the store it opens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .memory import MemoryStore
from .sqlite import FILENAME, SQLiteStore
from .store import Store


@dataclass(frozen=True)
class ResultsConfig:
    ingest: str
    query: str
    pub: str
    data_dir: Path | None
    backend: str = "sqlite"
    result_expires_s: float = 86400.0
    curve_secret_key: str | None = None
    curve_authorized_dir: str | None = None
    # The router's largest task payload: a query past four times it (plus room for the
    # header) is dropped unread by libzmq, so that a stranger cannot make this process
    # hold an arbitrarily large message.
    max_message_size: int = 1 << 24


def open_store(config: ResultsConfig) -> Store:
    """The store ``config`` asks for: SQLite in the data dir unless memory is asked for."""
    if config.backend == "memory" or config.data_dir is None:
        return MemoryStore()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(config.data_dir / FILENAME)
