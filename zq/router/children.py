"""The results actor as the router's child process, and the socket events reach it by."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import psutil
import zmq

from .. import protocol, results, security
from ..errors import ConfigurationError
from ..protocol import Cmd, Message
from ..utils import reachable
from .config import RouterConfig

logger = logging.getLogger("zq.router")

_START_TIMEOUT_S = 30.0
# How long a results actor left by a killed router gets to store what reached it and
# exit (it is told to when its router dies) before it is killed.
_PREVIOUS_EXIT_S = 5.0
_ROLES = ("ingest", "query", "pub")


def _exited(process: psutil.Process, timeout_s: float) -> bool:
    """Wait until ``process`` has exited (a zombie has: its adopter may be slow to reap
    it); False if it still runs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class ResultsChild:
    """Starts the results actor, restarts it when it dies, and sends events to it; the
    results actor answers each batch that carries ``upto`` with STORED once stored."""

    def __init__(self, ctx: zmq.Context[Any], config: RouterConfig, endpoint: str,
                 keys: security.ServerKeys | None):
        self.ctx = ctx
        self.config = config
        self.endpoint = endpoint
        self.keys = keys
        self.endpoints: dict[str, str] = {}
        self.process: Any = None
        self.push: zmq.Socket[Any] | None = None
        # The event types the results actor's subscribers want (see .monitor).
        self.wanted: frozenset[str] = frozenset()
        # The router's epoch, which tells receivers that its event clock started again.
        self.epoch = ""

    @property
    def _saved(self) -> Path:
        return self.config.data_dir / "results-endpoints.msgpack"

    def start(self) -> None:
        self._wait_for_previous()
        wanted = self._wanted()
        cfg = results.ResultsConfig(
            ingest=wanted["ingest"], query=wanted["query"], pub=wanted["pub"],
            data_dir=None if self.config.results_backend == "memory" else self.config.data_dir,
            backend=self.config.results_backend,
            result_expires_s=self.config.result_expires_s,
            curve_secret_key=self.config.curve_secret_key,
            curve_authorized_dir=self.config.curve_authorized_dir,
            max_message_size=self.config.max_message_size)
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe(duplex=False)
        self.process = mp.Process(target=results.main, name="zq-results",
                                  args=(cfg, child, self.config.log_level), daemon=True)
        self.process.start()
        child.close()
        try:
            if not parent.poll(_START_TIMEOUT_S):
                self.process.kill()
                raise ConfigurationError(f"the results actor did not start within "
                                         f"{_START_TIMEOUT_S:.0f} s")
            self.endpoints = parent.recv()
        except EOFError:  # it exited before it was ready; what it printed says why
            self.process.join(5)
            raise ConfigurationError(
                f"the results actor ({self.config.results_backend} store in "
                f"{self.config.data_dir}) exited with status {self.process.exitcode} "
                f"before it was ready") from None
        finally:
            parent.close()
        try:
            self._remember()
        except OSError as exc:  # a full disk: they are remembered in memory meanwhile
            logger.error("cannot save the results endpoints to %s: %s", self._saved,
                         exc.strerror or exc)
        self.close(0)
        self.push = self.ctx.socket(zmq.DEALER)
        if self.keys is not None:
            # The router is the results actor's client, with its own key pair.
            security.secure_client(self.push, security.ClientKeys(
                self.keys.public_key, self.keys.secret_key, self.keys.public_key))
        self.push.linger = 0
        self.push.sndhwm = 0
        self.push.connect(reachable(self.endpoints["ingest"], self.endpoint))
        # An empty batch, so that the results actor knows this peer at once and tells it
        # which events its subscribers want.
        self.wanted = frozenset()
        self.send_events([], None)

    def _wanted(self) -> dict[str, str]:
        if self.config.bind.startswith("ipc://"):
            return {role: f"{self.config.bind}.results-{role}" for role in _ROLES}
        # The same ports as last time where they are free, so that clients and workers
        # connected before a restart reconnect without being told.
        host = self.endpoint.rsplit(":", 1)[0]
        if self.config.results_ports is not None:
            return {role: f"{host}:{port}"
                    for role, port in zip(_ROLES, self.config.results_ports, strict=True)}
        remembered = self.endpoints or self._remembered()
        if remembered and all(v.startswith(host + ":") for v in remembered.values()):
            return dict(remembered)
        return {role: f"{host}:*" for role in _ROLES}

    def _remember(self) -> None:
        """Write the endpoints, and who holds them, for the next router on this data dir."""
        saved = {**self.endpoints, "pid": self.process.pid, "router": os.getpid()}
        try:
            saved["created"] = psutil.Process(self.process.pid).create_time()
        except psutil.Error:
            pass
        tmp = self._saved.with_suffix(".tmp")
        tmp.write_bytes(protocol.pack(saved))
        tmp.replace(self._saved)

    def _remembered(self) -> dict[str, str] | None:
        found = self._read_saved()
        if all(isinstance(found.get(role), str) for role in _ROLES):
            return {role: found[role] for role in _ROLES}
        return None

    def _read_saved(self) -> dict[str, Any]:
        try:
            found = protocol.unpack(self._saved.read_bytes())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def _wait_for_previous(self) -> None:
        """Wait until the results actor of a router that was killed has exited.

        It holds the endpoints the new one must bind: its tcp ports cannot be bound
        meanwhile, and an ipc:// path bound anew would leave the clients still connected
        to it talking to it. It exits by itself once its router is gone (it stores what
        reached it first); one that does not is killed.
        """
        saved = self._read_saved()
        pid, created = saved.get("pid"), saved.get("created")
        if not isinstance(pid, int) or not isinstance(created, float) \
                or (self.process is not None and self.process.pid == pid):
            return
        try:
            previous = psutil.Process(pid)
            if previous.create_time() != created:
                return  # the PID was reused
            if previous.ppid() == saved.get("router") and previous.ppid() != os.getpid():
                logger.error("router %d, alive, uses this data dir too; its results actor "
                             "%d holds the endpoints in %s", previous.ppid(), pid,
                             self._saved)
                return
            if _exited(previous, 0):
                return
            logger.warning("waiting for the results actor %d of the previous router to "
                           "exit", pid)
            if not _exited(previous, _PREVIOUS_EXIT_S):
                logger.error("the results actor %d of the previous router did not exit "
                             "within %.0f s; killing it", pid, _PREVIOUS_EXIT_S)
                previous.kill()
                _exited(previous, _PREVIOUS_EXIT_S)
        except psutil.NoSuchProcess:
            pass
        except psutil.Error as exc:
            logger.error("could not check the previous results actor %d: %s", pid, exc)

    @property
    def sentinel(self) -> int:
        return int(self.process.sentinel)

    def died(self) -> bool:
        return not self.process.is_alive()

    @property
    def socket(self) -> zmq.Socket[Any]:
        assert self.push is not None
        return self.push

    def send_events(self, events: list[dict[str, Any]], upto: int | None, *,
                    resync: bool = False, complete: bool = False,
                    monitor: list[dict[str, Any]] | None = None) -> None:
        """Send ``events``; ``upto``: the journal sequence of the last final event sent
        so far, which the results actor acknowledges once it stored them. ``resync``
        marks a resend of the oldest unacknowledged ones (``complete``: all of them).
        ``monitor``: Celery-shaped events for the results actor to publish."""
        header: dict[str, Any] = {"events": events}
        if monitor:
            header["monitor"] = monitor
            header["epoch"] = self.epoch
        if upto is not None:
            header["upto"] = upto
        if resync:
            header["resync"] = True
            header["complete"] = complete
        try:
            protocol.send(self.socket, Message(Cmd.EVENTS, header), flags=zmq.NOBLOCK)
        except zmq.Again:
            # Final events stay in the journal and are sent again to the next results
            # actor; the rest (SENT, STARTED, progress) are superseded by later states.
            logger.error("results actor not taking events; %d dropped", len(events))

    def stored(self) -> list[int]:
        """The STORED acknowledgements waiting on the socket (and, on the way, what the
        results actor says its subscribers want: :attr:`wanted`)."""
        out = []
        for _, msg in protocol.drain(self.socket):
            upto = msg.header.get("upto")
            types = msg.header.get("types")
            if msg.cmd is Cmd.STORED and isinstance(upto, int):
                out.append(upto)
            elif msg.cmd is Cmd.MONITOR and isinstance(types, list):
                self.wanted = frozenset(t for t in types if isinstance(t, str))
            else:
                logger.warning("unexpected %s from the results actor", msg.cmd.value)
        return out

    def close(self, linger_s: float) -> None:
        """Close the event socket, letting what it holds leave for up to ``linger_s``
        (it does once the context is terminated)."""
        if self.push is not None:
            self.push.close(linger=int(linger_s * 1000))
            self.push = None

    def stop(self) -> None:
        """Stop the process; it stores what reached it before it exits."""
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
