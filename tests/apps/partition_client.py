"""A zq client that the network-cut tests run inside the router's network namespace, where
the test process itself cannot reach: ``python -m tests.apps.partition_client ROUTER``.

It reads one JSON request per line on stdin and writes one JSON answer per line on stdout:

* ``{"op": "stats"}``: the router's stats, or null when it does not answer within 2 s.
* ``{"op": "submit", "tasks": [[name, args], ...]}``: sends them as one group (one SUBMIT,
  dealt out in one dispatch); answers their ids in order.
* ``{"op": "states", "ids": [...]}``: each id's stored state now, with its result's repr
  or its exception's type and message.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import zmq

from tests.apps import partition
from zq import group, protocol
from zq.protocol import Cmd, Message


def stats(router: str) -> dict[str, Any] | None:
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(router)
        protocol.send(sock, Message(Cmd.CONTROL, {"op": "stats", "rid": 0}))
        if not sock.poll(2000):
            return None
        _, reply = protocol.recv(sock)
        return reply.header
    finally:
        sock.close()


def submit(tasks: list[list[Any]]) -> list[str]:
    sent = group(getattr(partition, name).s(*args) for name, args in tasks).apply_async()
    return [result.id for result in sent.results]


def states(ids: list[str]) -> dict[str, list[str]]:
    found = {}
    for task_id in ids:
        result = partition.app.AsyncResult(task_id)
        state, value = result.state, result.result
        if isinstance(value, BaseException):
            detail = f"{type(value).__name__}: {value}"
        else:
            detail = repr(value)
        found[task_id] = [state, detail]
    return found


def main(router: str) -> None:
    partition.app.conf.update(router=router)
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "stats":
            answer: Any = stats(router)
        elif op == "submit":
            answer = submit(request["tasks"])
        elif op == "states":
            answer = states(request["ids"])
        else:
            answer = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    partition.app.close()


if __name__ == "__main__":
    main(sys.argv[1])
