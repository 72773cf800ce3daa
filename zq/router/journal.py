"""The router's durable log of accepted tasks that have not finished.

An append-only file of msgpack records:

    ["A", header, body]   accepted (header as received, so it replays byte for byte); a
                          second A of the same task (uid and retries) replaces its header
                          (a task that replaced itself now relays its replacement)
    ["D", uid, retries]   finished, failed, revoked, expired or purged: never replay it
                          (uid: the task id, or a copy's ``copy_id``)
    ["D", uid, retries, seq, event]
                          the same, with the task's final state event, numbered: kept
                          until the results actor has stored it
    ["E", seq, event]     a final event not yet stored (what a rewrite keeps of a D)
    ["S", seq]            the results actor stored every final event up to ``seq``
    ["R", id]             revoked: stays in the revoked set across restarts
    ["F", uid, retries]   finished (what a rewrite keeps of a D): a resend of it after a
                          restart is recognised and not run again
    ["C", body_id, index, event]
                          a chord part ended with this final event (a failure unless
                          SUCCESS): kept while the body's A is live, so that a restart
                          counts it again (see zq.router.chords)

Records of one router step are written with one ``write`` before the router answers
ACCEPTED, so a task the router accepted survives the router being killed. A commit that
cannot be written whole (a full or read-only disk, an I/O error) leaves nothing of itself
in the file: its acceptances are dropped (the router refuses those tasks) and its other
records are kept and written first by the next commit that succeeds. With
``fsync=True`` they also survive the machine losing power: a thread syncs the file while the
router goes on, and the router holds its answers until the sync that covers their records
is done. Whatever is written while one fsync runs is covered by the next, so under load one
fsync serves many steps (a group commit), and an idle router syncs at once. On start the
file is read, the live tasks (with the chord parts counted for those that are bodies) and
the final events not yet stored are returned, and the file is rewritten with only them;
when there is no room for the rewrite the old file is kept as it is and appended to. A
task's end and its result are written together, so a kill at any moment leaves either the
task to replay or its result to store again; a chord part's C record is written with its
task's end too.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from ..protocol import tracked_id
from .syncer import Syncer

logger = logging.getLogger("zq.journal")

# Rewrite the file when it grows past this and most of it is finished work.
_COMPACT_BYTES = 64 * 1024 * 1024
_REVOKED_KEPT = 50_000
# Finished attempts a rewrite keeps (``F`` records), so that a client's resend of a task
# whose ACCEPTED died with the router is still recognised after a restart.
_FINISHED_KEPT = 100_000


@dataclass
class Replayed:
    """What a journal holds on opening."""

    live: list[tuple[bytes, bytes]] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    # Final events the results actor may not have stored, by sequence, in order.
    unstored: list[tuple[int, Any]] = field(default_factory=list)
    # Chord parts counted for live bodies: (body id, index, event), in the order counted.
    parts: list[tuple[str, int, Any]] = field(default_factory=list)
    # The most recently finished attempts (tracked id, retries), oldest first: a resend of
    # one after a restart (its ACCEPTED lost with the old router) is not taken again.
    finished: list[tuple[str, int]] = field(default_factory=list)


class Journal:
    def __init__(self, path: Path, *, fsync: bool = False):
        self.path = path
        self.fsync = fsync
        # This step's records, each marked True when it is an acceptance.
        self._buffer: list[tuple[bool, bytes]] = []
        # Records (not acceptances) of commits that could not be written, written first.
        self._backlog: list[bytes] = []
        # The file's length in whole records; past it, only the torn bytes of a failed
        # write, cut off before the next one (``_torn``).
        self._size = 0
        self._torn = False
        self._live_bytes = 0
        self._compact_bytes = _COMPACT_BYTES
        self._file: Any = None
        # Why the last write failed (ENOSPC, EDQUOT, EROFS, EIO...); None once one succeeds.
        self.write_error: OSError | None = None
        # Commits written, and (with fsync) how many of them are on disk; compared with
        # ``written`` at the time an answer was ready, ``synced`` says it may go.
        self.written = 0
        # The sequence of the last final event recorded (see ``finished``).
        self.event_seq = 0
        self._syncer: Syncer | None = None
        # Held by the syncer around an fsync, and by a rewrite around swapping the file.
        self._swap_lock = threading.Lock()

    @property
    def syncs(self) -> int:
        """fsyncs done (with fsync): each covers every commit written before it began."""
        return self._syncer.syncs if self._syncer is not None else 0

    def _sync_file(self) -> None:
        # Not while a rewrite swaps the file: what was to be synced is in the new one.
        with self._swap_lock:
            os.fsync(self._file.fileno())

    @property
    def synced(self) -> int:
        return self._syncer.done if self._syncer is not None else self.written

    @property
    def error(self) -> OSError | None:
        """The error an fsync failed with: from then on nothing written can be trusted to
        be on disk (the kernel reports a failed writeback once), so the router stops."""
        return self._syncer.error if self._syncer is not None else None

    @property
    def wakeup_fd(self) -> int | None:
        """Readable when a sync finished (with fsync); the router polls it."""
        return self._syncer.read_fd if self._syncer is not None else None

    def open(self) -> Replayed:
        """Read what was accepted and not finished (in order), the revoked ids, and the
        final events not known to be stored; rewrite the file with only those."""
        state = _ReplayState()
        whole = 0  # where the last readable record ends
        if self.path.exists():
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                        max_buffer_size=2**31 - 1)
            with open(self.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    unpacker.feed(chunk)
                    for record in _records(unpacker, self.path):
                        state.replay(record)
                        whole = unpacker.tell()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replayed = Replayed([(header, body) for header, body, _ in state.live.values()],
                            list(state.revoked)[-_REVOKED_KEPT:], list(state.unstored.items()),
                            state.live_parts(), list(state.finished))
        self.event_seq = state.event_seq
        failed = self._rewrite(replayed)
        if failed is not None:
            # No room for a new file (or no writing at all): the first commits will meet
            # the same disk, so the router starts out refusing tasks until one is written.
            self.write_error = failed
            self._append_to_old(whole)
        if self.fsync:
            self._syncer = Syncer(self._sync_file, self.written, f"journal {self.path}")
            self._syncer.start()
        return replayed

    def _rewrite(self, replayed: Replayed) -> OSError | None:
        """Replace the file with only these records; or the error the new one could not be
        written with (the old file is left as it was)."""
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                for header, body in replayed.live:
                    f.write(msgpack.packb(["A", header, body], use_bin_type=True))
                for body_id, index, event in replayed.parts:
                    f.write(msgpack.packb(["C", body_id, index, event], use_bin_type=True))
                for task_id in replayed.revoked:
                    f.write(msgpack.packb(["R", task_id], use_bin_type=True))
                for uid, retries in replayed.finished[-_FINISHED_KEPT:]:
                    f.write(msgpack.packb(["F", uid, retries], use_bin_type=True))
                for seq, event in replayed.unstored:
                    f.write(msgpack.packb(["E", seq, event], use_bin_type=True))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            logger.error("journal %s: cannot rewrite it (%s); keeping the old file",
                         self.path, exc.strerror or exc)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return exc
        # Not while the syncer holds the old file; what it was to sync is in the new one,
        # durable once the directory entry is.
        with self._swap_lock:
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
            if self._file is not None:
                self._file.close()
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
            if self._syncer is not None:
                self._syncer.mark_synced(self.written)
        self._size = self._live_bytes = self.path.stat().st_size
        self._torn = False
        return None

    def _append_to_old(self, whole: int) -> None:
        """Go on appending to the file as it is, cut after its last readable record (a
        record appended after a torn one could not be read back)."""
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
        self._size = self._live_bytes = whole
        self._torn = os.fstat(self._file.fileno()).st_size > whole
        if self._torn:
            self._cut()

    def _cut(self) -> None:
        """Drop the bytes of a failed write (shrinking a file needs no room)."""
        try:
            self._file.truncate(self._size)
            self._torn = False
        except OSError as exc:
            logger.error("journal %s: cannot cut a failed write off (%s); trying again "
                         "before the next write", self.path, exc.strerror or exc)

    def accepted(self, raw_header: bytes, body: bytes) -> None:
        self._buffer.append((True, msgpack.packb(["A", raw_header, body], use_bin_type=True)))

    def finished(self, task_id: str, retries: int, event: Any = None) -> int | None:
        """Record a task's end, with its final state event when there is one; returns
        that event's sequence (acknowledged by ``stored`` once the results actor has
        it), or None."""
        if event is None:
            self._buffer.append((False, msgpack.packb(["D", task_id, retries],
                                                      use_bin_type=True)))
            return None
        self.event_seq += 1
        self._buffer.append((False, msgpack.packb(
            ["D", task_id, retries, self.event_seq, event], use_bin_type=True)))
        return self.event_seq

    def stored(self, upto: int) -> None:
        """The results actor stored every final event up to sequence ``upto``."""
        self._buffer.append((False, msgpack.packb(["S", upto], use_bin_type=True)))

    def revoked(self, task_id: str) -> None:
        self._buffer.append((False, msgpack.packb(["R", task_id], use_bin_type=True)))

    def part(self, body_id: str, index: int, event: Any) -> None:
        """A chord part ended with ``event``: counted again after a restart while the
        body is live."""
        self._buffer.append((False, msgpack.packb(["C", body_id, index, event],
                                                  use_bin_type=True)))

    def updated(self, raw_header: bytes, body: bytes) -> None:
        """An accepted task's header changed (it relays its replacement now): an A record
        again, which replaces the first on replay. Not an acceptance: the task was
        accepted long ago, so a commit that fails keeps it for the next one."""
        self._buffer.append((False, msgpack.packb(["A", raw_header, body],
                                                  use_bin_type=True)))

    @property
    def pending(self) -> int:
        """Records waiting to be written: this step's, and those failed commits kept."""
        return len(self._buffer) + len(self._backlog)

    def commit(self) -> bool:
        """Write every record recorded so far; True when they are all in the file. After
        that they survive the process dying, and (with fsync) once ``synced`` reaches
        ``written``, the machine losing power.

        False when the file could not be written (``write_error`` says why): then nothing
        of this commit is in the file, the acceptances recorded since the last commit are
        dropped for good (the caller refuses those tasks) and the other records are kept,
        to be written first by the next commit.
        """
        if not self._buffer and not self._backlog:
            return True
        records = self._backlog + [record for _, record in self._buffer]
        data = b"".join(records)
        try:
            self._write(data)
        except OSError as exc:
            self.write_error = exc
            self._backlog += [record for acceptance, record in self._buffer if not acceptance]
            self._buffer.clear()
            self._torn = True
            self._cut()
            return False
        self._buffer.clear()
        self._backlog.clear()
        self.write_error = None
        self._size += len(data)
        self._live_bytes += len(data)
        self.written += 1
        if self._syncer is not None:
            self._syncer.request(self.written)
        return True

    def _write(self, data: bytes) -> None:
        """All of ``data``, in as many writes as the file takes, or an OSError."""
        if self._torn:
            self._file.truncate(self._size)
            self._torn = False
        view = memoryview(data)
        while view:
            count = self._file.write(view)
            if not count:  # a regular file that takes nothing and says no error
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[count:]

    def should_compact(self) -> bool:
        return self._live_bytes > self._compact_bytes

    def compact(self, live: list[tuple[bytes, bytes]], revoked: list[str],
                unstored: list[tuple[int, Any]] | None = None,
                parts: list[tuple[str, int, Any]] | None = None,
                finished: list[tuple[str, int]] | None = None) -> bool:
        """Rewrite the file with only ``live``, ``revoked``, the ``unstored`` final events
        and the chord ``parts`` of the bodies held (the router's memory, which holds
        everything committed). False when it was not rewritten: a commit could not be
        written, or there is no room for the new file (then the old one stays, and the
        next try waits until the file has grown as much again)."""
        if not self.commit():
            return False
        if self._rewrite(Replayed(live, revoked[-_REVOKED_KEPT:], list(unstored or ()),
                                  list(parts or ()), list(finished or ()))) is None:
            self._compact_bytes = _COMPACT_BYTES
            return True
        self._compact_bytes = self._live_bytes + _COMPACT_BYTES
        return False

    def close(self) -> None:
        """Write and (with fsync) sync what is left. After an fsync error nothing more is
        synced: a second fsync could succeed without the lost data being on disk."""
        failed = self.error is not None
        if not failed:
            self.commit()
        if self._syncer is not None:
            self._syncer.stop()
        if self._file is not None:
            try:
                if self.fsync and not failed and self.error is None:
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _records(unpacker: msgpack.Unpacker, path: Path) -> Any:
    while True:
        try:
            yield next(unpacker)
        except StopIteration:
            return
        except Exception as exc:  # a torn last record after a crash
            logger.warning("journal %s: stopping at unreadable record: %s", path, exc)
            return


class _ReplayState:
    """What the records read so far leave: live tasks, revoked ids, unstored events, the
    chord parts of live bodies."""

    def __init__(self) -> None:
        # By (tracked id, retries): header, body, task id.
        self.live: OrderedDict[tuple[str, int], tuple[bytes, bytes, str]] = OrderedDict()
        # How many live entries (attempts, copies) each task id has.
        self.live_ids: dict[str, int] = {}
        self.revoked: OrderedDict[str, None] = OrderedDict()
        self.unstored: OrderedDict[int, Any] = OrderedDict()
        self.finished: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.event_seq = 0
        # Chord parts by body id, in the order counted. A C record may come before its
        # body's A (it was kept from a failed commit): which bodies are live is judged at
        # the end (``live_parts``).
        self.parts: dict[str, list[tuple[int, Any]]] = {}

    def replay(self, record: Any) -> None:
        if not isinstance(record, list) or not record:
            return
        kind, size = record[0], len(record)
        if kind == "A" and size == 3:
            self._accepted(record[1], record[2])
        elif kind == "D" and size in (3, 5):
            self._finished((record[1], record[2]))
            if size == 5:
                self._event(record[3], record[4])
        elif kind == "E" and size == 3:
            self._event(record[1], record[2])
        elif kind == "S" and size == 2 and isinstance(record[1], int):
            while self.unstored and next(iter(self.unstored)) <= record[1]:
                self.unstored.popitem(last=False)
        elif kind == "R" and size == 2:
            self.revoked[record[1]] = None
        elif (kind == "F" and size == 3 and isinstance(record[1], str)
              and isinstance(record[2], int)):
            self._remember_finished((record[1], record[2]))
        elif (kind == "C" and size == 4 and isinstance(record[1], str)
              and isinstance(record[2], int) and isinstance(record[3], dict)):
            self.parts.setdefault(record[1], []).append((record[2], record[3]))

    def _accepted(self, raw_header: Any, body: Any) -> None:
        """An A record: a task accepted, or (the same key again) its header replaced."""
        try:
            header = msgpack.unpackb(raw_header, raw=False, strict_map_key=False)
            key = (tracked_id(header), header.get("retries", 0))
            task_id = str(header["id"])
        except Exception:
            return
        if key not in self.live:
            self.live_ids[task_id] = self.live_ids.get(task_id, 0) + 1
        self.live[key] = (raw_header, body, task_id)

    def _remember_finished(self, key: tuple[str, int]) -> None:
        self.finished[key] = None
        self.finished.move_to_end(key)
        if len(self.finished) > _FINISHED_KEPT:
            self.finished.popitem(last=False)

    def _finished(self, key: Any) -> None:
        """A D record: the attempt is over (remembered, so that a resend of it is not
        taken again); a body's parts go with its last live entry."""
        if isinstance(key[0], str) and isinstance(key[1], int):
            self._remember_finished((key[0], key[1]))
        ended = self.live.pop(key, None)
        if ended is None:
            return
        task_id = ended[2]
        self.live_ids[task_id] -= 1
        if not self.live_ids[task_id]:
            del self.live_ids[task_id]
            self.parts.pop(task_id, None)

    def live_parts(self) -> list[tuple[str, int, Any]]:
        """The chord parts of bodies still live, each body's in the order counted."""
        return [(body_id, index, event) for body_id, parts in self.parts.items()
                if body_id in self.live_ids for index, event in parts]

    def _event(self, seq: Any, event: Any) -> None:
        if isinstance(seq, int) and isinstance(event, dict):
            self.unstored[seq] = event
            self.event_seq = max(self.event_seq, seq)
