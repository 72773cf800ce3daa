"""The memory store: for tests and for ``--results memory``."""

from __future__ import annotations

from collections.abc import Iterable

from .store import Row, is_expired, is_ready


class MemoryStore:
    """States in a dict; gone when the results actor stops."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}

    def get_many(self, ids: Iterable[str]) -> dict[str, Row]:
        return {i: self._rows[i] for i in ids if i in self._rows}

    def put_many(self, rows: list[Row]) -> None:
        for row in rows:
            self._rows[row["id"]] = row

    def delete(self, ids: Iterable[str]) -> None:
        for i in ids:
            self._rows.pop(i, None)

    def expire(self, before_ts: float) -> int:
        old = [i for i, row in self._rows.items() if is_expired(row, before_ts)]
        self.delete(old)
        return len(old)

    def unready(self, limit: int) -> list[Row]:
        return [row for row in self._rows.values() if not is_ready(row)][:limit]

    def close(self) -> None:
        pass
