"""Hosts on a private network, made of Linux network namespaces, for multi-host tests.

    with Lan() as lan:
        a = lan.add_host("a")
        worker = lan.spawn(a, ["python", "-m", "zq", "workers", ...], log_path, env)
        lan.cut(a)   # as if a's cable were pulled: no error anywhere, packets just vanish
        lan.heal(a)

The ``hub`` namespace holds a bridge (the switch) with the address 10.200.0.1; each host is
a namespace of its own, joined to the bridge by a veth pair, with 10.200.0.2, .3, ...
Cutting a host sets its port on the bridge down. Those addresses exist only inside these
namespaces, so no packet of a test ever leaves them.

Names carry the test process's PID (``zqn<pid>-<n><role>``), so runs side by side never
clash; ``close()`` kills what ``spawn`` started, by PID, and deletes the namespaces (with
them every link), whatever happened before. Namespaces left by a run that was itself killed
are deleted, with what still runs in them, by the next ``unavailable()`` once that run's
PID is gone.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from zq.testing import Process

PREFIX = "zqn"
SUBNET = "10.200.0"
_count = itertools.count()


class NetnsError(RuntimeError):
    pass


def ip(*args: str) -> str:
    """Run ``ip`` with ``args``; its output, or NetnsError with what it said."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process still inside ``namespace`` (one of this module's)."""
    try:
        pids = ip("netns", "pids", namespace).split()
    except NetnsError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _remove_stale() -> None:
    """Delete namespaces of this module whose test process no longer exists (it was killed
    before its ``close()``), and the processes it had left in them."""
    for line in ip("netns", "list").splitlines():
        match = re.match(rf"({PREFIX}(\d+)-\S+)", line)
        if match is None:
            continue
        try:
            os.kill(int(match.group(2)), 0)
        except ProcessLookupError:
            _kill_inside(match.group(1))
            subprocess.run(["ip", "netns", "delete", match.group(1)], capture_output=True,
                           timeout=15)
        except PermissionError:
            pass


def unavailable() -> str | None:
    """Why this machine cannot give a test namespaces with a bridge and veth pairs (None
    when it can): found by making one, since only trying tells."""
    if shutil.which("ip") is None:
        return "no `ip` command (the iproute2 package)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        _remove_stale()
        ip("netns", "add", probe)
        try:
            ip("-n", probe, "link", "add", "br0", "type", "bridge")
            ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
            ip("-n", probe, "link", "set", "v0", "master", "br0")
        finally:
            ip("netns", "delete", probe)
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a network namespace with a bridge and a veth pair: {exc}"
    return None


class Host:
    """A namespace joined to the hub's bridge: its name, its address, its port's name."""

    def __init__(self, namespace: str, address: str, port: str):
        self.namespace = namespace
        self.address = address
        self.port = port

    def __repr__(self) -> str:
        return f"Host({self.namespace}, {self.address})"


class Started(Process):
    """A process started inside a namespace (``ip netns exec`` execs it, so the PID is the
    command's own), stopped as :class:`zq.testing.Process` stops one."""

    def __init__(self, namespace: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str], cwd: Path | str | None, pipes: bool):
        super().__init__(namespace, list(argv), log_path, env, cwd,
                         command=["ip", "netns", "exec", namespace, *argv], pipes=pipes)


class Lan:
    """A switch in the ``hub`` namespace and hosts joined to it; see the module's doc."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{next(_count)}"
        self.namespaces: list[str] = []
        self.hosts: list[Host] = []
        self.processes: list[Started] = []
        self.hub_address = f"{SUBNET}.1"
        try:
            self.hub = self._namespace("hub")
            ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            ip("-n", self.hub, "addr", "add", f"{self.hub_address}/24", "dev", "br0")
            ip("-n", self.hub, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _namespace(self, role: str) -> str:
        name = f"{self.tag}{role}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def add_host(self, role: str) -> Host:
        """A new namespace with one veth into the bridge, up, with the next address."""
        try:
            namespace = self._namespace(role)
            host = Host(namespace, f"{SUBNET}.{len(self.hosts) + 2}", f"to-{role}"[:15])
            ip("link", "add", host.port, "netns", self.hub, "type", "veth",
               "peer", "name", "eth0", "netns", namespace)
            ip("-n", self.hub, "link", "set", host.port, "master", "br0")
            ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", self.hub, "link", "set", host.port, "up")
        except BaseException:
            self.close()
            raise
        self.hosts.append(host)
        return host

    def cut(self, host: Host) -> None:
        """Set the host's port on the bridge down: its packets, both ways, are dropped."""
        ip("-n", self.hub, "link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        ip("-n", self.hub, "link", "set", host.port, "up")

    def spawn(self, namespace: str | Host, argv: Sequence[str], log_path: Path,
              env: dict[str, str] | None = None, cwd: Path | str | None = None,
              pipes: bool = False) -> Started:
        """Run ``argv`` inside ``namespace``; with ``pipes`` its stdin and stdout are pipes
        to the test (else its output goes to ``log_path`` too)."""
        if isinstance(namespace, Host):
            namespace = namespace.namespace
        process = Started(namespace, argv, log_path, dict(env or os.environ), cwd, pipes)
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Stop every process started here, kill what is still left inside the namespaces
        (they are this test's, and only its processes can be in them), delete them."""
        for process in self.processes:
            try:
                process.stop()
            except OSError:
                pass
        self.processes.clear()
        for name in reversed(self.namespaces):
            _kill_inside(name)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=15)
        self.namespaces.clear()
        self.hosts.clear()


def env_with_pythonpath(root: Path, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """The test's environment, with ``root`` first on PYTHONPATH (processes started in a
    namespace import zq and the test apps from this checkout)."""
    env = {**os.environ, **(extra or {})}
    paths = [str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env
