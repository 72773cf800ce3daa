"""zq.journal.Journal: what is accepted and not finished survives a restart."""

import os
import select
import threading
import time

import msgpack

from zq import protocol
from zq.router.journal import Journal


def header(task_id, retries=0):
    return protocol.pack({"id": task_id, "task": "t", "ct": "x", "retries": retries})


def opened(path):
    journal = Journal(path)
    journal.open()
    return journal


def replay(path):
    """What a router starting on ``path`` would replay: live (header, body) pairs, revoked."""
    replayed = replay_all(path)
    return replayed.live, replayed.revoked


def replay_all(path):
    journal = Journal(path)
    try:
        return journal.open()
    finally:
        journal.close()


def replayed_ids(path):
    live, revoked = replay(path)
    return [protocol.unpack(h)["id"] for h, _ in live], revoked


def test_accepted_not_finished_is_replayed_in_order_with_its_body(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"body-a")
    journal.accepted(header("b"), b"body-b")
    journal.close()
    live, _ = replay(path)
    assert live == [(header("a"), b"body-a"), (header("b"), b"body-b")]


def test_finished_is_not_replayed(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    journal.accepted(header("b"), b"")
    journal.finished("a", 0)
    journal.close()
    assert replayed_ids(path) == (["b"], [])


def test_finishing_one_attempt_leaves_the_next(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a", 0), b"")
    journal.accepted(header("a", 1), b"")
    journal.finished("a", 0)
    journal.close()
    live, _ = replay(path)
    assert [protocol.unpack(h)["retries"] for h, _ in live] == [1]


def test_committed_records_survive_without_close(tmp_path):
    """A router killed right after commit(): nothing else was flushed."""
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    journal.commit()
    try:
        assert replayed_ids(path) == (["a"], [])
    finally:
        journal.close()


def test_uncommitted_records_are_not_written(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    journal.commit()
    journal.accepted(header("b"), b"")
    try:
        assert replayed_ids(path) == (["a"], [])
    finally:
        journal.close()


def test_torn_tail_is_tolerated(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"x" * 100)
    journal.accepted(header("b"), b"")
    journal.close()
    with open(path, "ab") as f:
        f.write(msgpack.packb(["A", header("c"), b"y" * 100])[:-40])
    assert replayed_ids(path) == (["a", "b"], [])


def test_garbage_records_are_skipped(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    journal.close()
    with open(path, "ab") as f:
        f.write(msgpack.packb(["A", b"\xc1not msgpack", b""]))
        f.write(msgpack.packb("not a record"))
        f.write(msgpack.packb(["Z", 1]))
    assert replayed_ids(path) == (["a"], [])


def test_revoked_ids_are_kept(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.revoked("r1")
    journal.revoked("r2")
    journal.close()
    assert replayed_ids(path) == ([], ["r1", "r2"])


def test_open_rewrites_the_file_with_only_live_tasks(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    for i in range(50):
        journal.accepted(header(f"t{i}"), b"x" * 1000)
    for i in range(49):
        journal.finished(f"t{i}", 0)
    journal.close()
    size_before = path.stat().st_size
    assert replayed_ids(path) == (["t49"], [])
    assert path.stat().st_size < size_before / 10


def test_missing_file_is_an_empty_journal(tmp_path):
    path = tmp_path / "sub" / "journal.log"
    assert replayed_ids(path) == ([], [])
    assert path.exists()


def test_copies_are_replayed_and_finished_by_copy_id(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    for queue in ("a", "b"):
        journal.accepted(protocol.pack({"id": "t", "task": "n", "ct": "x", "queue": queue,
                                        "copy_id": f"t\x1f{queue}"}), b"")
    journal.finished("t\x1fa", 0)
    journal.close()
    live, _ = replay(path)
    assert [protocol.unpack(h)["queue"] for h, _ in live] == ["b"]


def wait_synced(journal, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while journal.synced < journal.written:
        assert time.monotonic() < deadline, "the sync did not finish"
        time.sleep(0.001)


def test_fsync_reports_each_commit_synced_and_wakes_the_reader(tmp_path):
    journal = Journal(tmp_path / "journal.log", fsync=True)
    journal.open()
    try:
        assert journal.synced == journal.written == 0
        journal.accepted(header("a"), b"")
        journal.commit()
        assert journal.written == 1
        wait_synced(journal)
        assert select.select([journal.wakeup_fd], [], [], 5)[0]
        assert 1 <= journal.syncs <= journal.written
    finally:
        journal.close()
    assert replayed_ids(tmp_path / "journal.log") == (["a"], [])


def test_fsync_covers_commits_written_while_a_sync_runs(tmp_path, monkeypatch):
    """A group commit: the commits written while one fsync runs all ride on the next."""
    real_fsync = os.fsync
    started, release = threading.Event(), threading.Event()

    def held_fsync(fd):
        started.set()
        assert release.wait(5)
        real_fsync(fd)

    journal = Journal(tmp_path / "journal.log", fsync=True)
    journal.open()
    monkeypatch.setattr(os, "fsync", held_fsync)
    try:
        journal.accepted(header("t0"), b"")
        journal.commit()
        assert started.wait(5)
        for i in range(1, 20):
            journal.accepted(header(f"t{i}"), b"")
            journal.commit()
        assert journal.synced == 0
        release.set()
        wait_synced(journal)
        assert (journal.written, journal.syncs) == (20, 2)
    finally:
        release.set()
        journal.close()
    assert len(replayed_ids(tmp_path / "journal.log")[0]) == 20


def test_compaction_with_fsync_leaves_everything_synced(tmp_path):
    journal = Journal(tmp_path / "journal.log", fsync=True)
    journal.open()
    try:
        journal.accepted(header("a"), b"")
        journal.accepted(header("b"), b"")
        journal.finished("a", 0)
        journal.compact([(header("b"), b"")], [])
        wait_synced(journal)
        journal.accepted(header("c"), b"")
        journal.commit()
        wait_synced(journal)
    finally:
        journal.close()
    assert replayed_ids(tmp_path / "journal.log") == (["b", "c"], [])


def test_a_final_event_is_kept_until_the_results_actor_stored_it(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    journal.accepted(header("b"), b"")
    seq_a = journal.finished("a", 0, {"id": "a", "state": "SUCCESS"})
    seq_b = journal.finished("b", 0, {"id": "b", "state": "FAILURE"})
    journal.commit()
    assert (seq_a, seq_b) == (1, 2)
    journal.close()
    replayed = replay_all(path)
    assert replayed.live == []
    assert [(seq, e["id"]) for seq, e in replayed.unstored] == [(1, "a"), (2, "b")]
    journal = opened(path)  # rewritten with the unstored events as E records
    journal.stored(1)
    journal.commit()
    journal.close()
    assert [seq for seq, _ in replay_all(path).unstored] == [2]


def test_sequences_go_on_from_the_last_unstored_event_after_a_restart(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.finished("a", 0, {"id": "a", "state": "SUCCESS"})
    journal.close()
    journal = opened(path)
    assert journal.finished("b", 0, {"id": "b", "state": "SUCCESS"}) == 2
    journal.close()
