"""zq.utils: ids made without a system call each, unique across threads and forks."""

from __future__ import annotations

import itertools
import os
import threading
import uuid

import pytest

from zq import utils
from zq.utils import new_id


def test_an_id_is_a_version_4_uuid_in_its_standard_form() -> None:
    for task_id in (new_id() for _ in range(1000)):
        parsed = uuid.UUID(task_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == task_id


def test_ids_are_unique_within_a_process_and_across_threads() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_id() for _ in range(20_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [task_id for into in made for task_id in into]
    assert len(set(every)) == len(every) == 80_000


def _ids_of_a_forked_child(count: int) -> list[str]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids go up the pipe
        try:
            os.close(read)
            os.write(write, "\n".join(new_id() for _ in range(count)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    return text.split("\n")


def test_a_forked_child_makes_ids_its_parent_never_makes() -> None:
    before = [new_id() for _ in range(1000)]
    first, second = _ids_of_a_forked_child(1000), _ids_of_a_forked_child(1000)
    after = [new_id() for _ in range(1000)]
    every = before + first + second + after
    assert len(set(every)) == len(every)
    # Each child drew a prefix of its own, not a continuation of the parent's counter.
    prefixes = {task_id[:24] for task_id in every}
    assert len(prefixes) == 3
    for task_id in first + second:
        assert uuid.UUID(task_id).version == 4


def test_a_counter_that_runs_out_draws_a_new_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = utils._ids[0]
    monkeypatch.setattr(utils, "_ids", (prefix, itertools.count(utils._COUNTER_END - 1)))
    last = new_id()
    assert last == f"{prefix}ffffffffffff"
    following = new_id()
    assert following[:24] != prefix
    assert uuid.UUID(following).version == 4
