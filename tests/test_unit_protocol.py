"""zq.protocol: the one place frames are built and read."""

from __future__ import annotations

import struct
import uuid

import msgpack
import pytest
import zmq

from zq import ProtocolError, protocol
from zq.protocol import Cmd, Message


def frame(version: bytes = b"ZQ1", code: int = 1, header: bytes = b"\x80",
          length: int | None = None, body: bytes = b"") -> bytes:
    length = len(header) if length is None else length
    return version + bytes([code]) + struct.pack(">I", length) + header + body


@pytest.mark.parametrize("cmd", list(Cmd))
def test_every_command_round_trips(cmd):
    msg = Message(cmd, {"id": "t1", "n": [1, 2]}, b"\x00body")
    back = protocol.decode(msg.encode())
    assert (back.cmd, back.header, back.body) == (cmd, {"id": "t1", "n": [1, 2]}, b"\x00body")


def test_raw_header_is_forwarded_unchanged():
    raw = protocol.pack({"id": "x", "task": "t"})
    msg = protocol.decode(frame(header=raw, body=b"b"))
    assert msg.raw_header == raw
    assert msg.encode() == frame(header=raw, body=b"b")


def test_empty_body_is_allowed():
    assert protocol.decode(Message(Cmd.HELLO).encode()).body == b""


@pytest.mark.parametrize("data", [b"", b"ZQ1", b"ZQ1\x01\x00\x00\x00"])
def test_too_short(data):
    with pytest.raises(ProtocolError, match="too short"):
        protocol.decode(data)


def test_wrong_version():
    with pytest.raises(ProtocolError, match="unsupported protocol version"):
        protocol.decode(frame(version=b"ZQ9"))


@pytest.mark.parametrize("code", [0, len(Cmd) + 1, 255])
def test_unknown_command(code):
    with pytest.raises(ProtocolError, match="unknown command"):
        protocol.decode(frame(code=code))


def test_header_length_past_the_end():
    with pytest.raises(ProtocolError, match="runs past the end"):
        protocol.decode(frame(header=b"\x80", length=1000))


def test_header_not_msgpack():
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        protocol.decode(frame(header=b"\xc1"))


def test_truncated_header():
    header = msgpack.packb({"id": "abcdef"})
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        protocol.decode(frame(header=header[:-2]))


@pytest.mark.parametrize("value", [[1, 2], "text", 7, None])
def test_header_not_a_map(value):
    with pytest.raises(ProtocolError, match="header must be a map"):
        protocol.decode(frame(header=msgpack.packb(value)))


def test_error_reply_names_the_exception_class():
    msg = protocol.error("bad thing", kind="QueueFull", task_id="t9")
    assert msg.cmd is Cmd.ERROR
    assert msg.header == {"error": "QueueFull", "message": "bad thing", "id": "t9"}


def test_state_event_carries_body_and_extra_fields():
    event = protocol.state_event("t1", "SUCCESS", retries=2, name="n",
                                 content_type="application/json", body=b"5", pid=42)
    assert event == {"id": "t1", "state": "SUCCESS", "retries": 2, "name": "n",
                     "ct": "application/json", "body": b"5", "pid": 42}


def task(**fields):
    return {"id": "t1", "task": "n", "ct": "application/x-msgpack", **fields}


@pytest.mark.parametrize("fields", [
    {"chord": "body", "chord_index": 0},
    {"chord": "b" * 255, "chord_index": 999},
    {"chord_size": 1}, {"chord_size": 1_000_000},
    {"chord_size": 1, "relay": True}, {"relay": False},
    {"chord": "outer", "chord_index": 3, "chord_size": 2},  # a body that is a part too
    {"chord_results": "anything", "chord_error": 5},  # passed through untouched
])
def test_chord_fields_that_are_taken(fields):
    assert protocol.task_header_problem(task(**fields)) is None


@pytest.mark.parametrize(("fields", "words"), [
    ({"chord": "body"}, "go together"),
    ({"chord_index": 0}, "go together"),
    ({"chord": "", "chord_index": 0}, "'chord' must be"),
    ({"chord": "b" * 256, "chord_index": 0}, "'chord' must be"),
    ({"chord": 7, "chord_index": 0}, "'chord' must be"),
    ({"chord": "body", "chord_index": -1}, "'chord' must be"),
    ({"chord": "body", "chord_index": True}, "'chord' must be"),
    ({"chord": "body", "chord_index": 1.0}, "'chord' must be"),
    ({"chord_size": 0}, "'chord_size' must be an integer from 1 to 1000000"),
    ({"chord_size": 1_000_001}, "'chord_size'"),
    ({"chord_size": True}, "'chord_size'"),
    ({"chord_size": "3"}, "'chord_size'"),
    ({"relay": 1}, "'relay' must be true or false"),
])
def test_chord_fields_that_are_refused(fields, words):
    assert words in protocol.task_header_problem(task(**fields))


def test_a_done_s_chord_part_is_a_body_id_and_an_index():
    assert protocol.chord_part_problem(["body", 0]) is None
    for bad in (None, "body", ["body"], ["body", -1], ["", 0], [1, 0], ["body", False],
                ["body", 0, 1]):
        assert protocol.chord_part_problem(bad) is not None


@pytest.fixture
def dealer_and_router():
    ctx = zmq.Context.instance()
    endpoint = f"inproc://protocol-{uuid.uuid4().hex}"
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        router.bind(endpoint)
        dealer.identity = b"peer-1"
        dealer.connect(endpoint)
        yield dealer, router
    finally:
        dealer.close(linger=0)
        router.close(linger=0)


def test_send_and_recv_over_router(dealer_and_router):
    dealer, router = dealer_and_router
    protocol.send(dealer, Message(Cmd.SUBMIT, {"id": "a"}, b"args"))
    assert router.poll(2000)
    identity, msg = protocol.recv(router, routed=True)
    assert identity == b"peer-1"
    assert (msg.cmd, msg.header, msg.body) == (Cmd.SUBMIT, {"id": "a"}, b"args")
    protocol.send(router, Message(Cmd.ACCEPTED, {"id": "a"}), identity=identity)
    assert dealer.poll(2000)
    assert protocol.recv(dealer)[1].cmd is Cmd.ACCEPTED


def test_malformed_message_error_names_its_sender(dealer_and_router):
    dealer, router = dealer_and_router
    dealer.send(b"garbage")
    assert router.poll(2000)
    with pytest.raises(ProtocolError) as raised:
        protocol.recv(router, routed=True)
    assert raised.value.identity == b"peer-1"


def test_extra_frames_are_a_protocol_error(dealer_and_router):
    dealer, router = dealer_and_router
    dealer.send_multipart([Message(Cmd.HELLO).encode(), b"extra"])
    assert router.poll(2000)
    with pytest.raises(ProtocolError, match="expected 2 frames, got 3"):
        protocol.recv(router, routed=True)


def _sent(dealer, count, first=0):
    for i in range(first, first + count):
        protocol.send(dealer, Message(Cmd.HEARTBEAT, {"n": i}))


def _numbers(drained):
    return [msg.header["n"] for _, msg in drained]


@pytest.mark.parametrize("count", [1, 2, 3, 50])
def test_drain_reads_every_waiting_message_in_order_and_then_stops(dealer_and_router, count):
    dealer, router = dealer_and_router
    _sent(dealer, count)
    assert router.poll(2000)
    drained = list(protocol.drain(router, routed=True))
    assert [identity for identity, _ in drained] == [b"peer-1"] * count
    assert _numbers(drained) == list(range(count))
    assert list(protocol.drain(router, routed=True)) == []
    # What arrives later is read by the next drain.
    _sent(dealer, 2, first=count)
    assert router.poll(2000)
    assert _numbers(protocol.drain(router, routed=True)) == [count, count + 1]


def test_drain_of_a_socket_with_nothing_waiting_returns_at_once(dealer_and_router):
    dealer, router = dealer_and_router
    assert list(protocol.drain(dealer)) == []
    assert list(protocol.drain(router, routed=True)) == []


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_drain_reads_no_more_than_its_limit(dealer_and_router, limit):
    dealer, router = dealer_and_router
    _sent(dealer, 6)
    assert router.poll(2000)
    assert _numbers(protocol.drain(router, limit, routed=True)) == list(range(limit))
    assert _numbers(protocol.drain(router, routed=True)) == list(range(limit, 6))


def test_drain_hands_a_malformed_message_to_on_error_and_goes_on(dealer_and_router):
    dealer, router = dealer_and_router
    dealer.send(b"garbage")
    _sent(dealer, 2)
    assert router.poll(2000)
    errors = []
    drained = protocol.drain(router, routed=True,
                             on_error=lambda sender, exc: errors.append(sender))
    assert _numbers(drained) == [0, 1]
    assert errors == [b"peer-1"]
