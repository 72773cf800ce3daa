"""zq.journal.Journal: what is accepted and not finished survives a restart."""

import msgpack

from zq import protocol
from zq.journal import Journal


def header(task_id, retries=0):
    return protocol.pack({"id": task_id, "task": "t", "ct": "x", "retries": retries})


def replay(path):
    """What a router starting on ``path`` would replay: live (header, body) pairs, revoked."""
    journal = Journal(path)
    try:
        return journal.open()
    finally:
        journal.close()


def reopen(path):
    live, revoked = replay(path)
    return [protocol.unpack(h)["id"] for h, _ in live], revoked


def write(path, records):
    journal = Journal(path)
    journal.open()
    for record in records:
        record(journal)
    journal.commit()
    return journal


def test_accepted_not_finished_is_replayed_in_order_with_its_body(tmp_path):
    path = tmp_path / "journal.log"
    journal = write(path, [lambda j: j.accepted(header("a"), b"body-a"),
                           lambda j: j.accepted(header("b"), b"body-b")])
    journal.close()
    live, _ = replay(path)
    assert live == [(header("a"), b"body-a"), (header("b"), b"body-b")]


def test_finished_is_not_replayed(tmp_path):
    path = tmp_path / "journal.log"
    write(path, [lambda j: j.accepted(header("a"), b""),
                 lambda j: j.accepted(header("b"), b""),
                 lambda j: j.finished("a", 0)]).close()
    assert reopen(path) == (["b"], [])


def test_finishing_one_attempt_leaves_the_next(tmp_path):
    path = tmp_path / "journal.log"
    write(path, [lambda j: j.accepted(header("a", 0), b""),
                 lambda j: j.accepted(header("a", 1), b""),
                 lambda j: j.finished("a", 0)]).close()
    live, _ = replay(path)
    assert [protocol.unpack(h)["retries"] for h, _ in live] == [1]


def test_committed_records_survive_without_close(tmp_path):
    """A router killed after commit(): nothing else is flushed."""
    path = tmp_path / "journal.log"
    journal = write(path, [lambda j: j.accepted(header("a"), b"")])
    try:
        assert reopen(path) == (["a"], [])
    finally:
        journal.close()


def test_uncommitted_records_are_not_written(tmp_path):
    path = tmp_path / "journal.log"
    journal = write(path, [lambda j: j.accepted(header("a"), b"")])
    journal.accepted(header("b"), b"")
    try:
        assert reopen(path) == (["a"], [])
    finally:
        journal.close()


def test_torn_tail_is_tolerated(tmp_path):
    path = tmp_path / "journal.log"
    write(path, [lambda j: j.accepted(header("a"), b"x" * 100),
                 lambda j: j.accepted(header("b"), b"")]).close()
    torn = msgpack.packb(["A", header("c"), b"y" * 100])[:-40]
    with open(path, "ab") as f:
        f.write(torn)
    assert reopen(path) == (["a", "b"], [])


def test_garbage_records_are_skipped(tmp_path):
    path = tmp_path / "journal.log"
    write(path, [lambda j: j.accepted(header("a"), b"")]).close()
    with open(path, "ab") as f:
        f.write(msgpack.packb(["A", b"\xc1not msgpack", b""]))
        f.write(msgpack.packb("not a record"))
        f.write(msgpack.packb(["Z", 1]))
    assert reopen(path) == (["a"], [])


def test_revoked_ids_are_kept(tmp_path):
    path = tmp_path / "journal.log"
    write(path, [lambda j: j.revoked("r1"), lambda j: j.revoked("r2")]).close()
    assert reopen(path) == ([], ["r1", "r2"])


def test_open_rewrites_the_file_with_only_live_tasks(tmp_path):
    path = tmp_path / "journal.log"
    write(path, [lambda j: j.accepted(header(f"t{i}"), b"x" * 1000) for i in range(50)]
          + [lambda j, i=i: j.finished(f"t{i}", 0) for i in range(49)]).close()
    size_before = path.stat().st_size
    assert reopen(path) == (["t49"], [])
    assert path.stat().st_size < size_before / 10


def test_missing_file_is_an_empty_journal(tmp_path):
    path = tmp_path / "sub" / "journal.log"
    assert reopen(path) == ([], [])
    assert path.exists()
