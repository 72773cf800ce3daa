"""The router with ``journal_fsync``: nothing is answered or handed out before its fsync.

A real router (and its results actor) runs in this process, driven step by step, with real
sockets for a client and an actor; ``os.fsync`` is held back or made to fail, so that what
the router does while a sync is outstanding can be seen.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from zq import protocol
from zq.protocol import Cmd, Message
from zq.router import JournalFailed, Router, RouterConfig

pytestmark = pytest.mark.timeout(60)


class Fsync:
    """``os.fsync`` that waits while ``held`` is clear, and raises ``error`` when set."""

    def __init__(self) -> None:
        self.real = os.fsync
        self.released = threading.Event()
        self.released.set()
        self.error: OSError | None = None
        self.waiting = threading.Event()

    def __call__(self, fd: int) -> None:
        if not self.released.is_set():
            self.waiting.set()
            assert self.released.wait(20)
        if self.error is not None:
            raise self.error
        self.real(fd)


class Harness:
    def __init__(self, tmp_path: Path):
        config = RouterConfig(bind=f"ipc://{tmp_path / 'router.sock'}",
                              data_dir=tmp_path / "data", results_backend="memory",
                              journal_fsync=True)
        self.router = Router(config)
        self.router.setup()
        self.ctx = zmq.Context()
        self.client = self._dealer(b"client")
        self.actor = self._dealer(b"actor")
        protocol.send(self.actor, Message(Cmd.READY, {
            "queues": ["celery"], "credit": 5, "host": "h", "pid": 1, "supervised": False,
            "holding": []}))
        assert self.until(lambda: self.received(self.actor, Cmd.WELCOME))

    def _dealer(self, identity: bytes) -> zmq.Socket[Any]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.identity = identity
        sock.linger = 0
        sock.connect(self.router.endpoint)
        return sock

    def submit(self) -> str:
        task_id = f"fsync-{uuid.uuid4()}"
        protocol.send(self.client, Message(Cmd.SUBMIT, {"id": task_id, "task": "t",
                                                        "ct": "application/x-msgpack",
                                                        "queue": "celery"},
                                           protocol.pack([[], {}])))
        return task_id

    def received(self, sock: zmq.Socket[Any], cmd: Cmd) -> list[Message]:
        return [msg for _, msg in protocol.drain(sock) if msg.cmd is cmd]

    def until(self, found: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Step the router until ``found()`` is truthy; returns it, or None at the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.router.step(0.02)
            result = found()
            if result:
                return result
        return None

    def close(self) -> None:
        self.client.close(linger=0)
        self.actor.close(linger=0)
        self.ctx.term()
        self.router.teardown()


@pytest.fixture
def fsync(monkeypatch: pytest.MonkeyPatch) -> Fsync:
    held = Fsync()
    monkeypatch.setattr(os, "fsync", held)
    return held


@pytest.fixture
def harness(tmp_path: Path, fsync: Fsync) -> Iterator[Harness]:
    started = Harness(tmp_path)
    try:
        yield started
    finally:
        fsync.released.set()
        started.close()


def test_accepted_and_dispatch_wait_for_the_fsync(harness: Harness, fsync: Fsync):
    fsync.released.clear()
    task_id = harness.submit()
    assert harness.until(fsync.waiting.is_set)
    for _ in range(20):  # steps while the sync is held: nothing leaves
        harness.router.step(0.01)
    assert harness.received(harness.client, Cmd.ACCEPTED) == []
    assert harness.received(harness.actor, Cmd.TASK) == []
    assert harness.router.stats()["tasks"] == 1

    fsync.released.set()
    accepted: list[Message] = []
    tasks: list[Message] = []
    assert harness.until(lambda: (accepted.extend(harness.received(harness.client,
                                                                   Cmd.ACCEPTED)),
                                  tasks.extend(harness.received(harness.actor, Cmd.TASK)),
                                  accepted and tasks)[-1])
    assert accepted[0].header["id"] == task_id
    assert tasks[0].header["id"] == task_id


def test_tasks_sent_while_a_sync_runs_share_the_next_one(harness: Harness, fsync: Fsync):
    fsync.released.clear()
    harness.submit()
    assert harness.until(fsync.waiting.is_set)
    for _ in range(5):
        harness.submit()
        harness.router.step(0.01)
    syncs_before = harness.router.journal.syncs
    fsync.released.set()
    accepted: list[str] = []  # ACCEPTEDs of one step to one peer come as one ("ids")
    assert harness.until(lambda: len(accepted) == 6 or accepted.extend(
        i for m in harness.received(harness.client, Cmd.ACCEPTED)
        for i in m.header.get("ids") or [m.header["id"]]))
    assert harness.router.journal.syncs - syncs_before <= 2


def test_an_fsync_error_stops_the_router_without_answering(harness: Harness, fsync: Fsync):
    fsync.error = OSError(errno.EIO, "Input/output error")
    harness.submit()
    with pytest.raises(JournalFailed, match="Input/output error"):
        harness.until(lambda: False, timeout_s=10)
    assert harness.received(harness.client, Cmd.ACCEPTED) == []
    assert harness.received(harness.actor, Cmd.TASK) == []
