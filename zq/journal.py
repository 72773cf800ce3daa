"""The router's durable log of accepted tasks that have not finished.

An append-only file of msgpack records:

    ["A", header, body]   accepted (header as received, so it replays byte for byte)
    ["D", uid, retries]   finished, failed, revoked, expired or purged: never replay it
                          (uid: the task id, or a copy's ``copy_id``)
    ["R", id]             revoked: stays in the revoked set across restarts

Records of one router step are written with one ``write`` and flushed before the router
answers ACCEPTED, so a task the router accepted survives the router being killed. With
``fsync=True`` they also survive the machine losing power, at the price of one fsync a step
(each step carries many tasks under load). On start the file is read, the live tasks are
returned, and the file is rewritten with only them.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgpack

from .routing import tracked_id

logger = logging.getLogger("zq.journal")

# Rewrite the file when it grows past this and most of it is finished work.
_COMPACT_BYTES = 64 * 1024 * 1024
_REVOKED_KEPT = 50_000


class Journal:
    def __init__(self, path: Path, *, fsync: bool = False):
        self.path = path
        self.fsync = fsync
        self._buffer: list[bytes] = []
        self._live_bytes = 0
        self._file: Any = None

    def open(self) -> tuple[list[tuple[bytes, bytes]], list[str]]:
        """Read what was accepted and not finished, in order, and the revoked ids."""
        live: OrderedDict[tuple[str, int], tuple[bytes, bytes]] = OrderedDict()
        revoked: OrderedDict[str, None] = OrderedDict()
        if self.path.exists():
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                        max_buffer_size=2**31 - 1)
            with open(self.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    unpacker.feed(chunk)
                    for record in _records(unpacker):
                        _replay(record, live, revoked)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rewrite(list(live.values()), list(revoked)[-_REVOKED_KEPT:])
        return list(live.values()), list(revoked)[-_REVOKED_KEPT:]

    def _rewrite(self, live: list[tuple[bytes, bytes]], revoked: list[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for header, body in live:
                f.write(msgpack.packb(["A", header, body], use_bin_type=True))
            for task_id in revoked:
                f.write(msgpack.packb(["R", task_id], use_bin_type=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
        self._live_bytes = self.path.stat().st_size

    def accepted(self, raw_header: bytes, body: bytes) -> None:
        self._buffer.append(msgpack.packb(["A", raw_header, body], use_bin_type=True))

    def finished(self, task_id: str, retries: int) -> None:
        self._buffer.append(msgpack.packb(["D", task_id, retries], use_bin_type=True))

    def revoked(self, task_id: str) -> None:
        self._buffer.append(msgpack.packb(["R", task_id], use_bin_type=True))

    def commit(self) -> None:
        """Write what this step recorded; after this it survives the process dying."""
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._file.write(data)
        if self.fsync:
            os.fsync(self._file.fileno())
        self._live_bytes += len(data)

    def should_compact(self) -> bool:
        return self._live_bytes > _COMPACT_BYTES

    def compact(self, live: list[tuple[bytes, bytes]], revoked: list[str]) -> None:
        self.commit()
        self._rewrite(live, revoked[-_REVOKED_KEPT:])

    def close(self) -> None:
        self.commit()
        if self._file is not None:
            if self.fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def _records(unpacker: msgpack.Unpacker) -> Any:
    while True:
        try:
            yield next(unpacker)
        except StopIteration:
            return
        except Exception as exc:  # a torn last record after a crash
            logger.warning("journal %s: stopping at unreadable record: %s", unpacker, exc)
            return


def _replay(record: Any, live: OrderedDict[tuple[str, int], tuple[bytes, bytes]],
            revoked: OrderedDict[str, None]) -> None:
    if not isinstance(record, list) or not record:
        return
    kind = record[0]
    if kind == "A" and len(record) == 3:
        try:
            header = msgpack.unpackb(record[1], raw=False, strict_map_key=False)
            key = (tracked_id(header), header.get("retries", 0))
        except Exception:
            return
        live[key] = (record[1], record[2])
    elif kind == "D" and len(record) == 3:
        live.pop((record[1], record[2]), None)
    elif kind == "R" and len(record) == 2:
        revoked[record[1]] = None
