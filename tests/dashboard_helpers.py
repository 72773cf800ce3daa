"""A ``zq dashboard`` process for the tests, and plain HTTP calls to it (urllib only)."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import pytest

from zq.testing import Cluster, Process

pytest.importorskip("starlette", reason="the dashboard extra is not installed")
pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")
pytest.importorskip("prometheus_client", reason="the dashboard extra is not installed")

_URL = re.compile(r"zq dashboard at (http://\S+/)")


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Dashboard:
    process: Process
    url: str
    auth: tuple[str, str] | None = None

    def call(self, path: str, method: str = "GET", data: Any = None, *,
             auth: tuple[str, str] | None | bool = True, headers: dict[str, str] | None = None,
             raw: bytes | None = None, timeout_s: float = 10.0) -> Answer:
        """One request; ``auth=True`` sends the dashboard's own credentials, if any."""
        sent = dict(headers or {})
        body = raw
        if data is not None:
            body = json.dumps(data).encode()
            sent.setdefault("Content-Type", "application/json")
        if method == "POST" and body is None:
            body = b""
        credentials = self.auth if auth is True else auth or None
        if credentials:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            sent["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body,
                                         headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return Answer(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read(), dict(exc.headers))

    def get(self, path: str, **options: Any) -> Any:
        answer = self.call(path, **options)
        assert answer.status == 200, (path, answer.status, answer.body[:500])
        return answer.json()

    def post(self, path: str, data: Any = None, **options: Any) -> Any:
        answer = self.call(path, "POST", data, **options)
        assert answer.status == 200, (path, answer.status, answer.body[:500])
        return answer.json()

    def wait(self, predicate: Any, what: str, timeout_s: float = 15.0) -> Any:
        from tests.conftest import wait_until

        try:
            return wait_until(predicate, timeout_s, what)
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\n{self.process.log()[-3000:]}")


@contextmanager
def started_dashboard(cluster: Cluster, *args: str, bind: str = "127.0.0.1:0",
                      auth: tuple[str, str] | None = None,
                      workers: int | None = None) -> Iterator[Dashboard]:
    """``zq dashboard`` on a free port for ``cluster``, stopped by its PID at the end;
    ready once it has polled the router (and seen ``workers`` actors when given)."""
    extra = ["--basic-auth", f"{auth[0]}:{auth[1]}"] if auth else []
    log = cluster.dir / f"dashboard-{time.monotonic_ns()}.log"
    process = Process("dashboard", ["dashboard", "--router", cluster.router, "--bind", bind,
                                    *extra, *args], log, cluster.env, cluster.cwd)
    try:
        deadline = time.monotonic() + 20
        found = None
        while found is None:
            found = _URL.search(process.log())
            if not process.alive() or time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not start:\n{process.log()[-3000:]}")
            time.sleep(0.05)
        url = found.group(1).replace("://0.0.0.0:", "://127.0.0.1:")
        dashboard = Dashboard(process, url, auth)
        expected = workers if workers is not None else 0

        def ready() -> bool:
            answer = dashboard.call("/api/overview")
            if answer.status != 200:
                return False
            summary = answer.json()["summary"]
            return bool(summary["router_up"] and summary["workers_up"] >= expected)
        dashboard.wait(ready, "the dashboard to poll the router", 20)
        yield dashboard
    finally:
        process.stop()


@contextmanager
def basic_cluster_with_dashboard(directory: Path) -> Iterator[tuple[Cluster, Dashboard]]:
    """A cluster of the basic app (the basic app pointed at it) and a dashboard on it:
    what each dashboard test module shares."""
    from tests.apps import basic
    from tests.conftest import BASIC_APP, connect

    with Cluster(directory, app=BASIC_APP, concurrency=2) as started:
        connect(basic.app, started)
        try:
            with started_dashboard(started, workers=2) as dashboard:
                yield started, dashboard
        finally:
            basic.app.close()
