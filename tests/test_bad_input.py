"""Bad input against real processes (DESIGN.md, guarantee 3; issue 2 part 11; issue 4).

Each test throws one kind of bad input at a real router, results actor or worker, then
checks three things: the sender got a clear error back where its socket allows a reply,
nothing died (a crashed results actor or actor process is restarted by its parent, so
the check compares process ids from before and after), and a valid task still completes.
"""

from __future__ import annotations

import logging

import itertools
import os
import pickle
import re
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import zq
from zq import App, protocol, states
from zq.protocol import VERSION, Cmd, Message
from zq.testing import Cluster, is_spawned_child

HOSTILE_APP = "tests.apps.hostile"
ADD = "tests.apps.hostile.add"
ECHO = "tests.apps.hostile.echo"
MSGPACK = "application/x-msgpack"
PICKLE = "application/x-python-serialize"
REPLY_TIMEOUT_S = 3.0


# -- processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pids:
    """Who is running: a crash that a parent repaired shows up as a changed pid."""

    router: int
    results: frozenset[int]
    supervisors: frozenset[int]
    actors: frozenset[int]


def _spawned_children(pid: int) -> frozenset[int]:
    """The multiprocessing children (spawn start method) of ``pid``."""
    found = set()
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return frozenset()
    for child in children:
        try:
            if is_spawned_child(" ".join(child.cmdline())):
                found.add(child.pid)
        except psutil.Error:
            pass
    return frozenset(found)


def _pids(cluster: Cluster) -> Pids:
    assert cluster.router_process is not None
    actors: set[int] = set()
    for worker in cluster.workers:
        actors |= _spawned_children(worker.pid)
    return Pids(router=cluster.router_process.pid,
                results=_spawned_children(cluster.router_process.pid),
                supervisors=frozenset(w.pid for w in cluster.workers),
                actors=frozenset(actors))


def _wait_until_serving(cluster: Cluster, endpoints: dict[str, str]) -> Pids:
    """The processes of ``cluster`` once the results actor answers and every actor is up
    (an earlier test may have crashed one, and its parent takes a moment to replace it)."""
    deadline = time.monotonic() + 20.0
    while True:
        pids = _pids(cluster)
        stats = cluster.stats(1.0)
        if (len(pids.results) == 1 and stats is not None
                and len(pids.actors) == cluster.concurrency * len(cluster.workers)
                and _results_answer(endpoints["query"])):
            return pids
        if time.monotonic() > deadline:
            pytest.fail(f"the cluster is not serving: {pids}, stats {stats}")
        time.sleep(0.05)


def _results_answer(endpoint: str, timeout_s: float = 1.0) -> bool:
    with raw_socket(zmq.DEALER, endpoint) as sock:
        protocol.send(sock, Message(Cmd.GET, {"ids": [], "rid": "ping"}))
        return bool(sock.poll(timeout_s * 1000))


@dataclass(frozen=True)
class Baseline:
    """A cluster and the processes it had when a test began."""

    cluster: Cluster
    pids: Pids

    def changed(self) -> bool:
        return _pids(self.cluster) != self.pids


def assert_still_serving(app: App, before: Baseline) -> None:
    """Nothing died or was restarted, the router answers, and a valid task completes."""
    cluster = before.cluster
    assert cluster.router_process is not None and cluster.router_process.alive()
    assert all(worker.alive() for worker in cluster.workers)
    assert _pids(cluster) == before.pids, "a zq process died and was replaced"
    assert cluster.stats() is not None, "the router does not answer"
    result = app.send_task(ADD, (2, 3))
    assert result.get(timeout=10) == 5
    assert app.AsyncResult(result.id).state == states.SUCCESS


# -- raw sockets -----------------------------------------------------------------------


@contextmanager
def raw_socket(kind: int, endpoint: str) -> Iterator[zmq.Socket[Any]]:
    """A socket of our own to a zq process, closed with linger=0."""
    sock = zmq.Context.instance().socket(kind)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        yield sock
    finally:
        sock.close(linger=0)


def frame(cmd: Cmd | int, header: Any = None, body: bytes = b"", *,
          raw_header: bytes | None = None) -> bytes:
    """One message frame built by hand, so that any part of it can be wrong."""
    code = cmd if isinstance(cmd, int) else list(Cmd).index(cmd) + 1
    head = raw_header if raw_header is not None else protocol.pack(
        {} if header is None else header)
    return VERSION + bytes([code]) + struct.pack(">I", len(head)) + head + body


def receive(sock: zmq.Socket[Any], timeout_s: float = REPLY_TIMEOUT_S,
            watch: Baseline | None = None) -> Message:
    """The next message on ``sock``; fails the test if none comes within ``timeout_s``,
    saying so when a process of the ``watch`` cluster died meanwhile."""
    if not sock.poll(timeout_s * 1000):
        died = watch is not None and watch.changed()
        pytest.fail(f"no reply within {timeout_s:.1f}s"
                    + (": a zq process died and was replaced" if died else ""))
    _, msg = protocol.recv(sock)
    return msg


def exchange(sock: zmq.Socket[Any], *frames: bytes, watch: Baseline | None = None) -> Message:
    sock.send_multipart(list(frames))
    return receive(sock, watch=watch)


def assert_error(reply: Message, *fragments: str, kind: str = "ProtocolError") -> None:
    assert reply.cmd is Cmd.ERROR, f"expected ERROR, got {reply.cmd.value} {reply.header}"
    assert reply.header["error"] == kind
    message = reply.header["message"]
    assert isinstance(message, str) and message
    for fragment in fragments:
        assert fragment in message


def task_frame(header: dict[str, Any], args: Any = ((), {})) -> bytes:
    return frame(Cmd.SUBMIT, header, protocol.pack(args))


def task_header(**fields: Any) -> dict[str, Any]:
    """A valid task header, as ``send_task`` builds it, with ``fields`` changed."""
    return {"id": f"bad-input-{uuid.uuid4()}", "task": ECHO, "ct": MSGPACK, "queue": "celery",
            **fields}


def results_request(sock: zmq.Socket[Any], cmd: Cmd, header: dict[str, Any],
                    watch: Baseline | None = None) -> Message:
    """A request to the results actor's query socket and its reply (matched by rid)."""
    rid = uuid.uuid4().hex
    protocol.send(sock, Message(cmd, {**header, "rid": rid}))
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while True:
        reply = receive(sock, max(deadline - time.monotonic(), 0.01), watch)
        if reply.header.get("rid") == rid:
            return reply


def stored_state(sock: zmq.Socket[Any], task_id: str, watch: Baseline | None = None) -> str:
    reply = results_request(sock, Cmd.GET, {"ids": [task_id]}, watch)
    assert reply.cmd is Cmd.STATES
    return str(reply.header["states"][0]["state"])


class MakesDirWhenUnpickled:
    """Pickled, a payload with a visible side effect: unpickling it creates ``path``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (self.path,)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One router and ``zq workers -n 2 -A tests.apps.hostile`` for the module."""
    with Cluster(tmp_path_factory.mktemp("bad"), app=HOSTILE_APP, concurrency=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def app(hostile_cluster: Cluster) -> Iterator[App]:
    client = App("bad-input-client", router=hostile_cluster.router)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def results_endpoints(hostile_cluster: Cluster) -> dict[str, str]:
    """The results actor's endpoints, learnt as a client learns them: with HELLO."""
    with raw_socket(zmq.DEALER, hostile_cluster.router) as sock:
        protocol.send(sock, Message(Cmd.HELLO, {"rid": 1}))
        welcome = receive(sock)
    assert welcome.cmd is Cmd.WELCOME and welcome.header["rid"] == 1
    endpoints = welcome.header["results"]
    assert set(endpoints) == {"ingest", "query", "pub"}
    return dict(endpoints)


@pytest.fixture
def before(hostile_cluster: Cluster, results_endpoints: dict[str, str]) -> Baseline:
    return Baseline(hostile_cluster, _wait_until_serving(hostile_cluster, results_endpoints))


@pytest.fixture
def router_sock(hostile_cluster: Cluster) -> Iterator[zmq.Socket[Any]]:
    with raw_socket(zmq.DEALER, hostile_cluster.router) as sock:
        yield sock


@pytest.fixture
def query_sock(results_endpoints: dict[str, str]) -> Iterator[zmq.Socket[Any]]:
    with raw_socket(zmq.DEALER, results_endpoints["query"]) as sock:
        yield sock


@pytest.fixture
def ingest_sock(results_endpoints: dict[str, str]) -> Iterator[zmq.Socket[Any]]:
    with raw_socket(zmq.DEALER, results_endpoints["ingest"]) as sock:
        yield sock


# -- the router's socket: frames that are not zq's protocol ------------------------------


_PACKED_TASK = protocol.pack({"id": "t", "task": ECHO, "ct": MSGPACK, "queue": "celery"})

MALFORMED_FRAMES = {
    "empty frame": ([b""], "too short"),
    "garbage bytes": ([b"\x00\xff\x13garbage, not a zq message at all\xc1\xc1"],
                      "protocol version"),
    "wrong version prefix": ([b"XX9" + frame(Cmd.HELLO)[3:]], "unsupported protocol version"),
    "unknown command code": ([frame(0xEE, {})], "unknown command code 238"),
    "header length past the end": ([frame(Cmd.SUBMIT, raw_header=_PACKED_TASK)[:-5]],
                                   "runs past the end"),
    "truncated msgpack header": ([frame(Cmd.SUBMIT, raw_header=_PACKED_TASK[:-5])],
                                 "not valid msgpack"),
    "header is a list": ([frame(Cmd.SUBMIT, raw_header=protocol.pack(["id", "task"]))],
                         "must be a map"),
    "three frames of garbage": ([b"one", b"\x00two", b"three\xff"], "frames"),
}


@pytest.mark.parametrize("frames, fragment", MALFORMED_FRAMES.values(),
                         ids=list(MALFORMED_FRAMES))
def test_router_answers_a_malformed_frame_with_an_error(app, before, router_sock, frames,
                                                        fragment):
    assert_error(exchange(router_sock, *frames), fragment)
    assert_still_serving(app, before)


def test_router_answers_a_command_it_does_not_take_with_an_error(app, before, router_sock):
    reply = exchange(router_sock, frame(Cmd.GET, {"ids": ["x"]}))
    assert_error(reply, "does not take GET")
    assert_still_serving(app, before)


# -- the router's socket: SUBMIT headers that are not tasks ------------------------------


BAD_TASK_HEADERS = {
    "no id": ({"task": ECHO, "ct": MSGPACK}, "'id'"),
    "id not a string": ({"id": 7, "task": ECHO, "ct": MSGPACK}, "'id'"),
    "id too long": ({"id": "x" * 256, "task": ECHO, "ct": MSGPACK}, "'id'"),
    "no task": ({"id": "bad-input-no-task", "ct": MSGPACK}, "'task'"),
    "no ct": ({"id": "bad-input-no-ct", "task": ECHO}, "'ct'"),
    "eta a string": (task_header(eta="tomorrow"), "'eta' must be a number"),
    "expires a list": (task_header(expires=[1]), "'expires' must be a number"),
    "priority 42": (task_header(priority=42), "'priority' must be an integer from 0 to 9"),
    "retries -1": (task_header(retries=-1), "'retries' must be a non-negative integer"),
    "queue not a string": (task_header(queue=5), "'queue' must be a string"),
    "queue too long": (task_header(queue="q" * 256), "'queue' must be a string of at most"),
    "copy_id of another task": (task_header(queue="celery", copy_id="other\x1fcelery"),
                                "'copy_id' must be the task id"),
}


@pytest.mark.parametrize("header, fragment", BAD_TASK_HEADERS.values(),
                         ids=list(BAD_TASK_HEADERS))
def test_submit_with_a_bad_task_header_is_refused(app, before, router_sock, query_sock,
                                                  header, fragment):
    reply = exchange(router_sock, task_frame(header, [["never run"], {}]))
    assert_error(reply, fragment)
    task_id = header.get("id")
    if isinstance(task_id, str):
        assert reply.header.get("id") == task_id
        assert stored_state(query_sock, task_id) == states.PENDING
    assert_still_serving(app, before)


def test_submit_batch_runs_the_valid_task_and_reports_each_malformed_item(app, before,
                                                                          router_sock):
    good = task_header(task=ADD)
    bad_header = task_header(priority=42)
    batch = [
        [protocol.pack(good), protocol.pack([[20, 22], {}])],
        "not a pair",
        [b"\xc1 not msgpack", b""],
        [protocol.pack(["a", "list"]), b""],
        [protocol.pack({"id": "bad-input-no-ct", "task": ECHO}), b""],
        [protocol.pack(bad_header), protocol.pack([[1], {}])],
        [protocol.pack(task_header()), "body not bytes"],
    ]
    reply = exchange(router_sock, frame(Cmd.SUBMIT, {"id": "b1", "tasks": batch}))
    assert reply.cmd is Cmd.ACCEPTED
    assert reply.header["id"] == "b1"
    assert reply.header["ids"] == [good["id"]]
    errors = reply.header["errors"]
    assert len(errors) == len(batch) - 1
    for task_id, kind, message in errors:
        assert kind == "ProtocolError" and isinstance(message, str) and message
    assert [bad_header["id"], "ProtocolError"] in [e[:2] for e in errors]
    assert app.AsyncResult(good["id"]).get(timeout=10) == 42
    assert_still_serving(app, before)


def test_submit_batch_that_is_not_a_list_is_refused(app, before, router_sock):
    reply = exchange(router_sock, frame(Cmd.SUBMIT, {"id": "b2", "tasks": "everything"}))
    assert_error(reply, "'tasks'")
    assert_still_serving(app, before)


# -- the router's socket: actor and supervisor commands from a peer it does not know ------


PEER_NONSENSE = {
    "DONE": (Cmd.DONE, {"id": 5, "retries": "x", "requeue": "maybe"}),
    "DONE batch": (Cmd.DONE, {"done": [1, "two", {"id": None}]}),
    "READY bad queues and credit": (Cmd.READY, {"queues": "celery", "credit": -1}),
    "READY bad holding": (Cmd.READY, {"queues": ["bad-input-queue"], "credit": 1,
                                      "holding": 5}),
    "HEARTBEAT host not a string": (Cmd.HEARTBEAT, {"host": 5, "actors": "x"}),
    "HEARTBEAT actors not a list": (Cmd.HEARTBEAT, {"host": "bad-input-host", "actors": 5}),
    "LOST actor not an identity": (Cmd.LOST, {"actor": 42, "reason": [1, 2]}),
    "LOST without actor": (Cmd.LOST, {"reason": None}),
}


@pytest.mark.parametrize("cmd, header", PEER_NONSENSE.values(), ids=list(PEER_NONSENSE))
def test_actor_command_with_nonsense_fields_from_an_unknown_peer_is_refused(
        app, before, router_sock, cmd, header):
    """Answered with ERROR (or RESYNC: "announce yourself first"), and the router's view
    of actors and hosts is left as it was."""
    stats_before = before.cluster.stats()
    assert stats_before is not None
    reply = exchange(router_sock, frame(cmd, header))
    assert reply.cmd in (Cmd.ERROR, Cmd.RESYNC), f"got {reply.cmd.value} {reply.header}"
    if reply.cmd is Cmd.ERROR:
        assert reply.header["message"]
    stats_after = before.cluster.stats()
    assert stats_after is not None
    assert stats_after["actors"] == stats_before["actors"]
    assert stats_after["hosts"] == stats_before["hosts"]
    assert_still_serving(app, before)


MALFORMED_EVENTS = {
    "missing id": {"state": "SUCCESS"},
    "state not a string": {"id": "bad-input-state", "state": 5},
    "body not bytes": {"id": "bad-input-body", "state": "SUCCESS", "ct": MSGPACK,
                       "body": "text"},
    "retries not an integer": {"id": "bad-input-retries", "state": "SUCCESS", "retries": "1"},
    "exc not a map": {"id": "bad-input-exc", "state": "FAILURE", "exc": "boom"},
    "ts nil": {"id": "bad-input-ts-nil", "state": "SUCCESS", "ts": None},
    "ts a list": {"id": "bad-input-ts-list", "state": "SUCCESS", "ts": [1]},
}


ROUTER_EVENTS = ["missing id", "state not a string", "ts nil"]


@pytest.mark.parametrize("event", [MALFORMED_EVENTS[name] for name in ROUTER_EVENTS],
                         ids=ROUTER_EVENTS)
def test_malformed_events_on_the_router_socket_from_an_unknown_peer_are_refused(
        app, before, router_sock, query_sock, event):
    """The router forwards actors' EVENTS to the results actor: a stranger's malformed
    event must neither reach the store nor crash the results actor on the way."""
    reply = exchange(router_sock, frame(Cmd.EVENTS, {"events": [event]}), watch=before)
    assert reply.cmd in (Cmd.ERROR, Cmd.RESYNC), f"got {reply.cmd.value} {reply.header}"
    if isinstance(event.get("id"), str):
        assert stored_state(query_sock, event["id"], before) == states.PENDING
    assert_still_serving(app, before)


# -- the router's socket: oversized tasks ------------------------------------------------


@pytest.fixture(scope="module")
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A router that takes task bodies of at most 1000 bytes."""
    with Cluster(tmp_path_factory.mktemp("small"), app=HOSTILE_APP, concurrency=1,
                 router_args=["--max-message-size", "1000"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def small_app(small_cluster: Cluster) -> Iterator[App]:
    client = App("bad-input-small-client", router=small_cluster.router)
    try:
        yield client
    finally:
        client.close()


def test_oversized_task_is_refused_with_publish_error(small_cluster, small_app):
    with raw_socket(zmq.DEALER, small_cluster.router) as sock:
        header = task_header()
        reply = exchange(sock, task_frame(header, [["x" * 2000], {}]))
    assert_error(reply, "max_message_size", kind="PublishError")
    assert reply.header["id"] == header["id"]
    with pytest.raises(zq.PublishError, match="max_message_size"):
        small_app.send_task(ECHO, ("x" * 5000,)).accepted(10)
    with pytest.raises(zq.PublishError, match="max_message_size"):
        small_app.send_task(ECHO, ("x" * 5000,), confirm=True)
    assert small_app.send_task(ADD, (2, 3)).get(timeout=10) == 5
    assert small_cluster.router_process is not None and small_cluster.router_process.alive()


def test_task_far_over_max_message_size_gets_a_clear_error_at_once(small_cluster, small_app):
    """A body beyond the router socket's own limit (2 x max_message_size + 64 KiB), where
    libzmq drops the connection instead of passing the message on."""
    started = time.monotonic()
    with pytest.raises(zq.PublishError) as refused:
        small_app.send_task(ECHO, ("x" * 200_000,), publish_timeout_s=3).accepted(3)
    elapsed = time.monotonic() - started
    assert small_app.send_task(ADD, (2, 3)).get(timeout=10) == 5
    assert small_cluster.router_process is not None and small_cluster.router_process.alive()
    assert "max_message_size" in str(refused.value), str(refused.value)
    assert elapsed < 2.0


# -- the results actor's sockets ---------------------------------------------------------


RESULTS_GARBAGE = {
    "empty frame": ([b""], "too short"),
    "garbage bytes": ([b"\x00\xff\x13not a zq message\xc1"], "protocol version"),
    "wrong version prefix": ([b"XX9" + frame(Cmd.GET, {"ids": []})[3:]],
                             "unsupported protocol version"),
    "unknown command code": ([frame(0xEE, {})], "unknown command code"),
    "truncated msgpack header": ([frame(Cmd.GET, raw_header=_PACKED_TASK[:-5])],
                                 "not valid msgpack"),
    "header is a list": ([frame(Cmd.GET, raw_header=protocol.pack([1, 2]))], "must be a map"),
    "three frames of garbage": ([b"one", b"two", b"three"], "frames"),
    "a command it does not take": ([frame(Cmd.SUBMIT, task_header())], "does not take"),
}


@pytest.mark.parametrize("frames, fragment", RESULTS_GARBAGE.values(),
                         ids=list(RESULTS_GARBAGE))
def test_results_query_socket_answers_garbage_with_an_error(app, before, query_sock, frames,
                                                            fragment):
    assert_error(exchange(query_sock, *frames, watch=before), fragment)
    assert_still_serving(app, before)


BAD_ID_REQUESTS = {
    "GET ids a string": (Cmd.GET, {"ids": "abc"}),
    "GET ids not strings": (Cmd.GET, {"ids": [1, None]}),
    "GET too many ids": (Cmd.GET, {"ids": [f"id-{i}" for i in range(10_001)]}),
    "GET without ids": (Cmd.GET, {}),
    "WAIT ids a map": (Cmd.WAIT, {"ids": {"a": 1}, "timeout_s": 1}),
    "WAIT too many ids": (Cmd.WAIT, {"ids": [f"id-{i}" for i in range(10_001)]}),
    "FORGET ids nil": (Cmd.FORGET, {"ids": None}),
    "SNAPSHOT ids a string": (Cmd.SNAPSHOT, {"ids": "abc"}),
}


@pytest.mark.parametrize("cmd, header", BAD_ID_REQUESTS.values(), ids=list(BAD_ID_REQUESTS))
def test_results_request_with_bad_ids_is_refused(app, before, query_sock, cmd, header):
    reply = results_request(query_sock, cmd, header, before)
    assert_error(reply, "'ids'")
    assert_still_serving(app, before)


@pytest.mark.parametrize("event", MALFORMED_EVENTS.values(), ids=list(MALFORMED_EVENTS))
def test_malformed_event_on_the_results_query_socket_is_refused(app, before, query_sock,
                                                                event):
    reply = results_request(query_sock, Cmd.EVENTS, {"events": [event]}, before)
    assert_error(reply)
    if isinstance(event.get("id"), str):
        assert stored_state(query_sock, event["id"], before) == states.PENDING
    assert_still_serving(app, before)


@pytest.mark.parametrize("events", ["not a list", 5, {"id": "x"}],
                         ids=["a string", "an integer", "a map"])
def test_events_request_without_an_event_list_is_refused(app, before, query_sock, events):
    reply = results_request(query_sock, Cmd.EVENTS, {"events": events}, before)
    assert_error(reply)
    assert_still_serving(app, before)


def _sync_ingest(ingest_sock: zmq.Socket[Any], query_sock: zmq.Socket[Any],
                 before: Baseline) -> None:
    """Wait until everything pushed to the ingest socket before now has been handled: a
    marker event pushed last is stored once the ones before it were."""
    marker = f"bad-input-marker-{uuid.uuid4()}"
    protocol.send(ingest_sock, Message(Cmd.EVENTS, {"events": [
        protocol.state_event(marker, states.SUCCESS, content_type=MSGPACK,
                             body=protocol.pack(None))]}))
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while stored_state(query_sock, marker, before) != states.SUCCESS:
        if before.changed():
            pytest.fail("the results actor died (and was replaced) on its ingest socket")
        if time.monotonic() > deadline:
            pytest.fail("the results actor did not handle its ingest socket in time")
        time.sleep(0.02)


def test_garbage_on_the_results_ingest_socket_is_dropped(app, before, ingest_sock,
                                                         query_sock):
    for frames, _ in RESULTS_GARBAGE.values():
        ingest_sock.send_multipart(frames)
    ingest_sock.send(frame(Cmd.EVENTS, {"events": "not a list"}))
    ingest_sock.send(frame(Cmd.EVENTS, {"events": 5}))
    _sync_ingest(ingest_sock, query_sock, before)
    assert_still_serving(app, before)


@pytest.mark.parametrize("event", MALFORMED_EVENTS.values(), ids=list(MALFORMED_EVENTS))
def test_malformed_event_on_the_ingest_socket_is_dropped_and_its_neighbour_kept(
        app, before, ingest_sock, query_sock, event):
    neighbour = f"bad-input-neighbour-{uuid.uuid4()}"
    good = protocol.state_event(neighbour, states.SUCCESS, content_type=MSGPACK,
                                body=protocol.pack("kept"))
    ingest_sock.send(frame(Cmd.EVENTS, {"events": [event, good]}))
    _sync_ingest(ingest_sock, query_sock, before)
    assert stored_state(query_sock, neighbour, before) == states.SUCCESS
    if isinstance(event.get("id"), str):
        assert stored_state(query_sock, event["id"], before) == states.PENDING
    assert_still_serving(app, before)


def test_forged_pickled_result_is_not_unpickled_by_the_client(app, before, query_sock,
                                                              tmp_path):
    canary = tmp_path / "unpickled"
    task_id = f"bad-input-forged-{uuid.uuid4()}"
    event = protocol.state_event(task_id, states.SUCCESS, content_type=PICKLE,
                                 body=pickle.dumps(MakesDirWhenUnpickled(canary)))
    assert results_request(query_sock, Cmd.EVENTS, {"events": [event]}).cmd is Cmd.STATES
    with pytest.raises(zq.ContentDisallowed):
        app.AsyncResult(task_id).get(timeout=10)
    assert not canary.exists()
    assert_still_serving(app, before)


def test_forged_failure_does_not_make_the_client_import_a_module(
        app, before, query_sock, tmp_path, monkeypatch):
    """A FAILURE names its exception's module; rebuilding the exception must not import
    whatever module a peer names (Celery's CVE-2021-23727)."""
    module = f"zq_bad_input_canary_{uuid.uuid4().hex}"
    imported = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        f"open({str(imported)!r}, 'w').close()\n\nclass Boom(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    task_id = f"bad-input-forged-{uuid.uuid4()}"
    event = protocol.state_event(task_id, states.FAILURE, exc={
        "type": "Boom", "module": module, "message": "forged", "args": ["forged"],
        "traceback": None})
    assert results_request(query_sock, Cmd.EVENTS, {"events": [event]}).cmd is Cmd.STATES
    try:
        with pytest.raises(Exception) as raised:
            app.AsyncResult(task_id).get(timeout=10)
    finally:
        sys.modules.pop(module, None)
    assert not imported.exists(), "the client imported a module a result named"
    assert isinstance(raised.value, zq.TaskError)
    assert_still_serving(app, before)


# -- tasks that cannot run -----------------------------------------------------------------


def test_unknown_task_name_waits_parked_with_a_warning_and_can_be_revoked(app, before,
                                                                          caplog):
    """No worker has the task: it is not handed to one (where it would fail with
    NotRegistered) but waits, parked, until a worker that has it connects; the sender is
    warned, and revoking it ends it."""
    with caplog.at_level(logging.WARNING, logger="zq.client"):
        result = app.send_task("tests.apps.hostile.no_such_task", (1, 2))
        result.accepted(10)
    assert "has task 'tests.apps.hostile.no_such_task'" in caplog.text
    with pytest.raises(zq.TimeoutError):
        result.get(timeout=1)
    stats = app.control.stats()
    assert stats["parked"] == {"celery": {"tests.apps.hostile.no_such_task": 1}}
    result.revoke()
    with pytest.raises(zq.TaskRevokedError):
        result.get(timeout=10)
    assert_still_serving(app, before)


UNDECODABLE_BODIES = {
    "msgpack garbage": (MSGPACK, b"\xc1\xc1\xc1 garbage", zq.DecodeError, "cannot deserialize"),
    "json garbage": ("application/json", b"{not json", zq.DecodeError, "cannot deserialize"),
    "msgpack map": (MSGPACK, protocol.pack({"args": [1]}), zq.SerializationError,
                    "[args list, kwargs map]"),
    "msgpack list of three": (MSGPACK, protocol.pack([[1], {}, 3]), zq.SerializationError,
                              "[args list, kwargs map]"),
    "args not a list": (MSGPACK, protocol.pack(["x", {}]), zq.SerializationError,
                        "[args list, kwargs map]"),
    "unknown content type": ("application/x-yaml", b"- 1", zq.ContentDisallowed,
                             "application/x-yaml"),
}


@pytest.mark.parametrize("content_type, body, error, fragment", UNDECODABLE_BODIES.values(),
                         ids=list(UNDECODABLE_BODIES))
def test_arguments_that_do_not_deserialize_end_failure_saying_why(
        app, before, router_sock, content_type, body, error, fragment):
    header = task_header(ct=content_type)
    reply = exchange(router_sock, frame(Cmd.SUBMIT, header, body))
    assert reply.cmd is Cmd.ACCEPTED and reply.header["id"] == header["id"]
    with pytest.raises(error, match=re.escape(fragment)):
        app.AsyncResult(header["id"]).get(timeout=10)
    assert app.AsyncResult(header["id"]).state == states.FAILURE
    assert_still_serving(app, before)


def test_pickle_is_refused_by_the_worker_without_being_unpickled(app, before, router_sock,
                                                                 tmp_path):
    proof = tmp_path / "proof-that-the-payload-works"
    pickle.loads(pickle.dumps(MakesDirWhenUnpickled(proof)))
    assert proof.is_dir()

    canary = tmp_path / "unpickled-by-the-worker"
    header = task_header(ct=PICKLE)
    body = pickle.dumps([[MakesDirWhenUnpickled(canary)], {}])
    reply = exchange(router_sock, frame(Cmd.SUBMIT, header, body))
    assert reply.cmd is Cmd.ACCEPTED
    with pytest.raises(zq.ContentDisallowed, match=re.escape(PICKLE)):
        app.AsyncResult(header["id"]).get(timeout=10)
    assert not canary.exists()
    assert_still_serving(app, before)


# -- fuzzing -------------------------------------------------------------------------------


_SEEDS = [
    task_frame({"id": "fuzz-1", "task": ECHO, "ct": MSGPACK, "queue": "celery"}, [["hi"], {}]),
    frame(Cmd.SUBMIT, {"id": "fuzz-b", "tasks": [
        [protocol.pack({"id": "fuzz-2", "task": ECHO, "ct": MSGPACK, "queue": "celery"}),
         protocol.pack([[1], {}])]]}),
    frame(Cmd.HELLO, {"rid": 1}),
    frame(Cmd.CONTROL, {"op": "stats", "rid": 2}),
    frame(Cmd.DONE, {"id": "fuzz-1", "retries": 0}),
    frame(Cmd.HEARTBEAT, {"host": "fuzz-host", "actors": []}),
    frame(Cmd.EVENTS, {"events": [{"id": "fuzz-1", "state": "SUCCESS", "retries": 0}]}),
    frame(Cmd.GET, {"ids": ["fuzz-1"], "rid": 3}),
]

# Header keys for generated messages. Left out are those whose valid values do damage by
# design: READY's queues and credit (a fuzzer registered for the default queue would take
# the tasks the test waits for), CONTROL's op (purge, revoke) and a task's time_limit (a
# tiny one has the supervisor kill the actor, as it should).
_TASK_OPTIONS = ["eta", "expires", "priority", "retries", "queue", "tasks", "soft_time_limit",
                 "chain", "headers", "copy_id", "exchange", "rk"]
_KEYS = ["id", "task", "ct", *_TASK_OPTIONS, "ids", "events", "state", "body", "exc", "ts",
         "timeout_s", "rid", "done", "host", "actors", "requeue"]

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), inner, max_size=4),
    max_leaves=12)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        operation = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if operation == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == "cut":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[position]
    return bytes(data)


_generated = st.builds(
    lambda code, header, body: frame(code, header, body),
    st.integers(1, len(Cmd)) | st.integers(0, 255),
    st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6),
    st.binary(max_size=32))

_submitted = st.builds(
    lambda task_id, name, content_type, header, body: frame(
        Cmd.SUBMIT, {**header, "id": task_id, "task": name, "ct": content_type,
                     "queue": "celery"}, body),
    st.text(min_size=1, max_size=20).map(lambda text: f"fuzz-{text}"),
    st.sampled_from([ECHO, ADD, "tests.apps.hostile.missing"]),
    st.sampled_from([MSGPACK, "application/json", PICKLE, "text/plain"]),
    st.dictionaries(st.sampled_from(_TASK_OPTIONS), _values, max_size=4),
    st.binary(max_size=32) | _values.map(protocol.pack)
    | st.tuples(st.lists(_values, max_size=3), st.dictionaries(st.text(max_size=4), _values,
                                                              max_size=2)).map(protocol.pack))

_frames = st.one_of(st.binary(max_size=200), _mutated(), _generated, _submitted)

_events = st.lists(st.dictionaries(
    st.sampled_from(["id", "state", "retries", "name", "ts", "ct", "body", "exc", "meta"]),
    _values, max_size=6), max_size=3)

_queried = st.builds(
    lambda cmd, header: frame(cmd, header),
    st.sampled_from([Cmd.GET, Cmd.WAIT, Cmd.FORGET, Cmd.SNAPSHOT]),
    st.fixed_dictionaries({}, optional={
        "ids": _values | st.lists(st.text(max_size=8), max_size=4), "timeout_s": _values,
        "rid": _values}))

_reported = st.builds(lambda events: frame(Cmd.EVENTS, {"events": events}), _events | _values)

_results_frames = st.one_of(st.binary(max_size=200), _mutated(), _generated, _queried,
                            _reported)


@st.composite
def _messages(draw: st.DrawFn, frames: st.SearchStrategy[bytes] = _frames) -> list[bytes]:
    """Mostly one frame, as zq sends them; now and then two or three."""
    return [draw(frames) for _ in range(draw(st.sampled_from([1, 1, 1, 1, 2, 3])))]


# derandomize: the same examples on every run, so that the test is never flaky; no
# shrinking, whose many reruns against a broken process could outlast the test timeout.
_FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                 phases=[Phase.explicit, Phase.generate])


def _answers(sock: zmq.Socket[Any], request: Message, key: str, value: Any,
             timeout_s: float = 2.0) -> bool:
    """Send ``request``; True once a reply with ``key`` = ``value`` arrives, skipping the
    replies to earlier fuzz messages."""
    protocol.send(sock, request)
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sock.poll(remaining * 1000):
            return False
        try:
            _, reply = protocol.recv(sock)
        except zq.ProtocolError:
            continue
        if reply.header.get(key) == value:
            return True


def test_fuzzed_frames_do_not_stop_the_router(app, before, router_sock):
    counter = itertools.count()

    @_FUZZ
    @given(_messages())
    def throw(frames: list[bytes]) -> None:
        router_sock.send_multipart(frames)
        rid = f"fuzz-{next(counter)}"
        assert _answers(router_sock, Message(Cmd.HELLO, {"rid": rid}), "rid", rid), \
            f"the router stopped answering after {frames!r}"

    throw()
    assert_still_serving(app, before)


def test_fuzzed_frames_do_not_stop_the_results_actor(app, before, query_sock, ingest_sock):
    counter = itertools.count()

    @settings(_FUZZ, max_examples=150)
    @given(_messages(_results_frames), st.booleans())
    def throw(frames: list[bytes], to_ingest: bool) -> None:
        (ingest_sock if to_ingest else query_sock).send_multipart(frames)
        rid = f"fuzz-{next(counter)}"
        assert _answers(query_sock, Message(Cmd.GET, {"ids": [], "rid": rid}), "rid", rid), \
            f"the results actor stopped answering after {frames!r}"
        assert _pids(before.cluster).results == before.pids.results, \
            f"the results actor died after {frames!r}"

    throw()
    assert_still_serving(app, before)


def test_a_query_past_the_size_cap_is_dropped_and_the_results_actor_serves_on(
        app, before, results_endpoints):
    """A stranger's 65 MiB frame on the query socket (over the cap of 64 MiB or four times
    max_message_size): libzmq drops it with the connection, unread; nothing else
    changes."""
    with raw_socket(zmq.DEALER, results_endpoints["query"]) as sock:
        sock.send(b"\x00" * (65 * 1024 * 1024))
        # Read, it would be answered as garbage ("protocol version"): dropped, it is not.
        assert not sock.poll(1500), "the oversized query was read and answered"
    with raw_socket(zmq.DEALER, results_endpoints["query"]) as sock:
        assert_error(exchange(sock, b"garbage", watch=before), "too short")
    assert_still_serving(app, before)
