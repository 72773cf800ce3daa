"""zq.journal.Journal: what is accepted and not finished survives a restart."""

import errno
import io
import os
import select
import threading
import time

import msgpack

from zq import protocol, states
from zq.protocol import RELAY_INDEX, Cmd, Message
from zq.router import files, intake, members
from zq.router.book import WAITING
from zq.router.core import Core
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


# -- a disk that fills up: commit writes everything or nothing, and says which ----------


class Disk:
    """Stands in for the journal's open file: takes at most ``room`` more bytes (then
    raises ``error``), at most ``chunk`` bytes per write (a short write), and can be made
    to fail truncating."""

    def __init__(self, real, room=None, chunk=None, error=errno.ENOSPC):
        self.real = real
        self.room = room
        self.chunk = chunk
        self.error = error
        self.truncate_fails = False
        self.writes = 0

    def write(self, data):
        self.writes += 1
        if self.room is not None and self.room <= 0:
            raise OSError(self.error, os.strerror(self.error))
        count = len(data)
        if self.chunk is not None:
            count = min(count, self.chunk)
        if self.room is not None:
            count = min(count, self.room)
            self.room -= count
        return self.real.write(bytes(data[:count]))

    def truncate(self, size):
        if self.truncate_fails:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return self.real.truncate(size)

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()


def in_file(path):
    """What a router would replay from ``path`` now, read from a copy: opening the file
    itself would rewrite it under the journal still writing to it."""
    copy = path.with_name("copy-" + path.name)
    copy.write_bytes(path.read_bytes())
    try:
        return replayed_ids(copy)
    finally:
        copy.unlink()


def on_disk(journal, **options):
    disk = Disk(journal._file, **options)
    journal._file = disk
    return disk


def test_short_writes_are_continued_until_the_whole_commit_is_written(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    disk = on_disk(journal, chunk=7)
    journal.accepted(header("a"), b"x" * 100)
    journal.accepted(header("b"), b"y" * 100)
    assert journal.commit() is True
    assert disk.writes > 20 and journal.written == 1 and journal.write_error is None
    journal.close()
    assert replay(path)[0] == [(header("a"), b"x" * 100), (header("b"), b"y" * 100)]


def test_a_commit_that_does_not_fit_leaves_nothing_of_itself_in_the_file(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    assert journal.commit()
    size = path.stat().st_size
    disk = on_disk(journal, room=10)  # the disk fills in the middle of a record
    journal.accepted(header("b"), b"z" * 100)
    assert journal.commit() is False
    assert journal.write_error.errno == errno.ENOSPC
    assert path.stat().st_size == size  # the torn bytes were cut off
    assert journal.written == 1
    assert in_file(path) == (["a"], [])
    disk.room = None
    journal.close()


def test_a_failed_commit_drops_its_acceptances_and_keeps_its_other_records(tmp_path):
    """The tasks of a failed commit are refused, so they must never replay; but a task
    finishing or an id revoked must reach the file once there is room."""

def test_a_final_event_is_kept_until_the_results_actor_stored_it(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    journal.accepted(header("b"), b"")
    assert journal.commit()
    disk = on_disk(journal, room=0)
    journal.finished("a", 0)
    journal.accepted(header("c"), b"")
    journal.revoked("r")
    assert journal.commit() is False
    assert journal.pending == 2
    journal.finished("b", 0)
    assert journal.commit() is False  # still full: kept, in order
    assert journal.pending == 3
    assert in_file(path) == (["a", "b"], [])
    disk.room = None  # space came back
    journal.accepted(header("d"), b"")
    assert journal.commit() is True
    assert (journal.pending, journal.write_error, journal.written) == (0, None, 2)
    journal.close()
    assert replayed_ids(path) == (["d"], ["r"])


def test_a_cut_that_fails_is_made_before_the_next_write(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    assert journal.commit()
    disk = on_disk(journal, room=5)
    disk.truncate_fails = True
    journal.accepted(header("b"), b"z" * 100)
    assert journal.commit() is False
    # The torn record stays at the end for now: a router killed here replays "a".
    assert in_file(path) == (["a"], [])
    disk.room, disk.truncate_fails = None, False
    journal.accepted(header("c"), b"")
    assert journal.commit() is True
    journal.close()
    assert replayed_ids(path) == (["a", "c"], [])


def test_read_only_and_io_errors_are_reported_not_raised(tmp_path):
    for error in (errno.EROFS, errno.EIO, errno.EDQUOT):
        journal = opened(tmp_path / f"journal-{error}.log")
        on_disk(journal, room=0, error=error)
        journal.accepted(header("a"), b"")
        assert journal.commit() is False
        assert journal.write_error.errno == error
        journal._file = journal._file.real
        journal.close()


def test_no_room_to_rewrite_at_open_keeps_the_old_file_and_appends_after_its_last_record(
        tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    journal.accepted(header("b"), b"")
    journal.finished("a", 0)
    journal.close()
    with open(path, "ab") as f:  # a torn record, as a kill in the middle of a write leaves
        f.write(msgpack.packb(["A", header("t"), b"y" * 100])[:-40])
    before = path.read_bytes()
    (tmp_path / "journal.tmp").mkdir()  # the rewrite cannot create its new file
    journal = Journal(path)
    live = journal.open().live
    assert [protocol.unpack(h)["id"] for h, _ in live] == ["b"]
    assert journal.write_error is not None
    assert before.startswith(path.read_bytes())  # the old file, only its torn tail cut
    journal.accepted(header("c"), b"")
    assert journal.commit()
    journal.close()
    (tmp_path / "journal.tmp").rmdir()
    assert replayed_ids(path) == (["b", "c"], [])


def test_compaction_without_room_keeps_the_old_file_and_waits_before_trying_again(
        tmp_path, monkeypatch):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("a"), b"")
    journal.accepted(header("b"), b"")
    journal.finished("a", 0)
    assert journal.commit()
    (tmp_path / "journal.tmp").mkdir()
    try:
        monkeypatch.setattr(journal, "_compact_bytes", 0)
        assert journal.should_compact()
        assert journal.compact([(header("b"), b"")], []) is False
        assert not journal.should_compact()
        assert journal.write_error is None  # appending still works
        journal.accepted(header("c"), b"")
        assert journal.commit()
    finally:
        journal.close()
        (tmp_path / "journal.tmp").rmdir()
    assert replayed_ids(path) == (["b", "c"], [])


def test_fsync_counts_only_commits_that_were_written(tmp_path):
    journal = Journal(tmp_path / "journal.log", fsync=True)
    journal.open()
    try:
        disk = on_disk(journal, room=0)
        journal.accepted(header("a"), b"")
        assert journal.commit() is False
        assert journal.written == 0 and journal.error is None
        disk.room = None
        journal.accepted(header("b"), b"")
        assert journal.commit()
        wait_synced(journal)
        assert journal.written == journal.synced == 1
    finally:
        journal.close()
    assert replayed_ids(tmp_path / "journal.log") == (["b"], [])


# -- the router's side: tasks of a commit that failed are refused, not ACCEPTED ----------


class FailingLog:
    """The journal as the router's rules see it, with commits that can be made to fail."""

    fsync = False

    def __init__(self):
        self.written = 0
        self.records = []
        self.step = []

    @property
    def synced(self):
        return self.written

    def accepted(self, raw_header, body):
        self.step.append(("A", protocol.unpack(raw_header)["id"]))

    def finished(self, task_id, retries):
        self.step.append(("D", task_id))

    def revoked(self, task_id):
        self.step.append(("R", task_id))


FAILURE = "journal /data/journal.log: No space left on device"


def submit(core, task_id, now, **header):
    fields = {"id": task_id, "task": "t", "ct": "application/x-msgpack", "queue": "celery",
              **header}
    intake.on_submit(core, b"client", Message(Cmd.SUBMIT, fields, b"args"), now)


def end_of_step(core, log, written, now):
    """What the loop does after the handlers: commit, then send (here: return) replies."""
    failure = None if written else FAILURE
    if written:
        log.records += log.step
    log.step = [r for r in log.step if r[0] != "A"] if not written else []
    refused = core.durable.committed(written, failure, now)
    if refused:
        intake.unwritten(core, refused, failure)
    replies, core.replies = core.replies, []
    return [msg for _, msg in replies]


def test_tasks_of_a_failed_commit_are_refused_forgotten_and_taken_anew_later():
    log = FailingLog()
    core = Core(log)
    submit(core, "a", 1.0)
    submit(core, "later", 1.0, countdown=None, eta=100.0)
    [first, second] = end_of_step(core, log, written=False, now=1.0)
    assert (first.cmd, first.header["error"], first.header["message"]) == (
        Cmd.ERROR, "PublishError", FAILURE)
    assert second.header["id"] == "later" and second.cmd is Cmd.ERROR
    assert core.book.tasks == {} and core.dispatch.depth("celery") == 0
    assert core.schedule.scheduled_count() == 0
    assert not any(e["state"] == states.SENT for e in core.events)
    assert core.deal(1.0) == {}

    submit(core, "b", 1.5)  # while the journal fails: refused at once, nothing journaled
    [reply] = end_of_step(core, log, written=True, now=1.5)
    assert reply.cmd is Cmd.ERROR and reply.header["message"] == FAILURE
    assert log.records == []

    submit(core, "a", 2.5)  # a retry is due: the resend is taken, and the write succeeds
    [reply] = end_of_step(core, log, written=True, now=2.5)
    assert reply.cmd is Cmd.ACCEPTED and core.durable.failure is None
    assert log.records == [("A", "a")]
    assert core.dispatch.depth("celery") == 1


def test_a_batch_answer_names_each_task_of_a_failed_commit_as_an_error():
    log = FailingLog()
    core = Core(log)
    submit(core, "kept", 1.0)
    end_of_step(core, log, written=True, now=1.0)
    batch = [[protocol.pack({"id": i, "task": "t", "ct": "x", "queue": "celery"}), b""]
             for i in ("kept", "x", "y")]
    intake.on_submit(core, b"client", Message(Cmd.SUBMIT, {"id": "batch", "tasks": batch}),
                     2.0)
    [reply] = end_of_step(core, log, written=False, now=2.0)
    assert reply.cmd is Cmd.ACCEPTED
    assert reply.header["ids"] == ["kept"]  # a resend of a task written before
    assert reply.header["errors"] == [["x", "PublishError", FAILURE],
                                      ["y", "PublishError", FAILURE]]
    assert set(core.book.tasks) == {"kept"}


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


# -- chords: the parts counted for a body survive a restart while the body is live -------


def body_header(task_id, size, retries=0, **fields):
    return protocol.pack({"id": task_id, "task": "t", "ct": "x", "retries": retries,
                          "chord_size": size, **fields})


def ok(task_id, result=b"r"):
    return {"id": task_id, "state": "SUCCESS", "retries": 0, "ct": "application/json",
            "body": result}


def records_in(path):
    return list(msgpack.Unpacker(io.BytesIO(path.read_bytes()), raw=False))


def test_chord_parts_are_replayed_for_live_bodies_and_dropped_with_the_body(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(body_header("body", 2), b"")
    journal.accepted(body_header("done", 1), b"")
    journal.part("body", 1, ok("p1"))
    journal.part("done", 0, ok("q0"))
    journal.part("body", 0, ok("p0"))
    journal.finished("done", 0)
    journal.part("nobody", 0, ok("r0"))  # a body never accepted here
    journal.close()
    replayed = replay_all(path)
    assert replayed.parts == [("body", 1, ok("p1")), ("body", 0, ok("p0"))]
    journal = opened(path)
    journal.finished("body", 0)
    journal.close()
    assert replay_all(path).parts == []


def test_the_rewrite_writes_the_parts_after_the_acceptances(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(body_header("body", 2), b"")
    journal.part("body", 0, ok("p0"))
    journal.accepted(header("later"), b"")
    journal.revoked("r")
    journal.close()
    replay_all(path)  # rewrites the file
    assert [r[0] for r in records_in(path)] == ["A", "A", "C", "R"]
    assert replay_all(path).parts == [("body", 0, ok("p0"))]


def test_a_part_kept_from_a_failed_commit_before_its_body_s_acceptance_counts(tmp_path):
    """Written first by the next commit, the part can come before a resend of its body."""
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.part("body", 0, ok("p0"))
    journal.accepted(body_header("body", 1), b"")
    journal.close()
    assert replay_all(path).parts == [("body", 0, ok("p0"))]


def test_a_body_s_parts_stay_while_another_attempt_of_it_is_live(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(body_header("body", 1), b"")
    journal.part("body", 0, ok("p0"))
    journal.accepted(body_header("body", 1, retries=1), b"")  # its retry, sent before DONE
    journal.finished("body", 0)
    journal.close()
    assert replay_all(path).parts == [("body", 0, ok("p0"))]


def test_compaction_keeps_the_parts_it_is_given(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(body_header("body", 2), b"")
    journal.part("body", 0, ok("p0"))
    journal.accepted(header("gone"), b"")
    journal.finished("gone", 0)
    assert journal.compact([(body_header("body", 2), b"")], [], [],
                           [("body", 0, ok("p0"))])
    journal.close()
    assert [r[0] for r in records_in(path)] == ["A", "C"]
    assert replay_all(path).parts == [("body", 0, ok("p0"))]


def test_a_second_acceptance_of_a_task_replaces_its_header_in_place(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("x"), b"body-x")
    journal.accepted(header("y"), b"")
    journal.updated(body_header("x", 1, relay=True), b"body-x")
    journal.close()
    live = replay_all(path).live
    assert live[0] == (body_header("x", 1, relay=True), b"body-x")
    assert len(live) == 2


def test_a_changed_header_is_kept_by_a_failed_commit(tmp_path):
    path = tmp_path / "journal.log"
    journal = opened(path)
    journal.accepted(header("x"), b"")
    assert journal.commit()
    disk = on_disk(journal, room=0)
    journal.updated(body_header("x", 1, relay=True), b"")
    journal.part("x", 0, ok("y"))
    assert journal.commit() is False
    assert journal.pending == 2
    disk.room = None
    assert journal.commit()
    journal.close()
    replayed = replay_all(path)
    assert protocol.unpack(replayed.live[0][0])["relay"] is True
    assert replayed.parts == [("x", 0, ok("y"))]


# -- the router's side: a chord across a router restart ----------------------------------


class Started:
    """A router core on a real journal, as the loop starts one: replayed, then stepped."""

    def __init__(self, path):
        self.journal = Journal(path)
        self.core = Core(self.journal)
        files.replay(self.core, self.journal)
        members.on_ready(self.core, b"w", Message(Cmd.READY, {
            "queues": ["celery"], "credit": 10, "host": "h", "pid": 1, "holding": []}), 0.0)

    def submit(self, *headers):
        items = [[protocol.pack({"task": "t", "ct": "x", "queue": "celery", **h}), b"args"]
                 for h in headers]
        intake.on_submit(self.core, b"client", Message(Cmd.SUBMIT, {"id": "batch",
                                                                    "tasks": items}), 1.0)
        assert self.journal.commit()

    def deal(self):
        return [e.uid for e in self.core.deal(1.0).get(b"w", [])]

    def done(self, task_id, **record):
        members.on_done(self.core, b"w", Message(Cmd.DONE, {"id": task_id, "retries": 0,
                                                            **record}), 1.0)
        assert self.journal.commit()

    def kill(self):
        """What a SIGKILL leaves: the committed records (close writes nothing more)."""
        assert self.journal.pending == 0
        self.journal.close()


def test_parts_that_ended_before_a_router_restart_count_after_it_and_the_body_fires_once(
        tmp_path):
    path = tmp_path / "journal.log"
    router = Started(path)
    router.submit({"id": "body", "chord_size": 2}, {"id": "p0", "chord": "body",
                                                   "chord_index": 0},
                  {"id": "p1", "chord": "body", "chord_index": 1})
    assert router.deal() == ["p0", "p1"]
    router.done("p1", event=ok("p1", b"one"))
    router.kill()

    router = Started(path)  # p0 replayed; the body waits with part 1 counted
    assert router.core.book.tasks["body"].state == WAITING
    assert router.deal() == ["p0"]
    router.done("p0", event=ok("p0", b"zero"))
    body = router.core.book.tasks["body"]
    assert body.header["chord_results"] == [["application/json", b"zero"],
                                            ["application/json", b"one"]]
    router.kill()

    router = Started(path)  # both parts in: the body is released as it is placed
    assert router.core.book.tasks["body"].header["chord_results"] == body.header[
        "chord_results"]
    assert router.journal.pending == 0  # its parts are not journaled again
    assert router.deal() == ["body"]
    router.done("body", event=ok("body"))
    router.kill()

    router = Started(path)
    assert not router.core.book.tasks and router.deal() == []
    router.kill()


def test_a_relay_survives_a_router_restart(tmp_path):
    path = tmp_path / "journal.log"
    router = Started(path)
    router.submit({"id": "x"})
    assert router.deal() == ["x"]
    router.submit({"id": "y", "chord": "x", "chord_index": RELAY_INDEX})
    router.done("x", replaced=True)
    router.kill()

    router = Started(path)
    relay = router.core.book.tasks["x"]
    assert relay.state == WAITING and relay.header["relay"] is True
    assert router.deal() == ["y"]
    router.done("y", event=ok("y", b"42"))
    assert "x" not in router.core.book.tasks
    assert [e for e in router.core.events if e["id"] == "x"][-1]["body"] == b"42"
    router.kill()
    assert replayed_ids(path) == ([], [])


def test_a_resend_of_a_finished_task_is_recognised_after_restarts(tmp_path):
    """A client sending again a task whose ACCEPTED died with the router (a task sent
    without waiting, say) must not make it run twice: the finished attempts are replayed,
    and kept by the rewrite, so that two restarts later the resend is still recognised."""
    path = tmp_path / "journal.log"
    router = Started(path)
    router.submit({"id": "done-once"}, {"id": "still-queued"})
    assert router.deal() == ["done-once", "still-queued"]
    router.done("done-once")
    router.kill()
    assert replay_all(path).finished[-1] == ("done-once", 0)
    for _ in range(2):  # the second start reads only what the first one's rewrite kept
        router = Started(path)
        router.submit({"id": "done-once"})
        assert "done-once" not in router.core.book.tasks
        assert router.core.book.known("done-once", 0)
        router.kill()
    assert sorted(router.core.book.tasks) == ["still-queued"]


def test_a_compaction_keeps_the_finished_attempts(tmp_path):
    path = tmp_path / "journal.log"
    router = Started(path)
    router.submit({"id": "a"})
    router.deal()
    router.done("a")
    journal = router.journal
    assert journal.compact([], [], [], [], router.core.book.finished_attempts())
    router.kill()
    assert replay_all(path).finished == [("a", 0)]
