"""Fixtures shared by the tests: real zq clusters and small polling helpers."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.apps import basic
from zq import App
from zq.testing import Cluster

BASIC_APP = "tests.apps.basic"

# A Unix socket path holds at most 107 bytes, and the clusters of the tests bind ipc://
# endpoints under their tmp_path (the results actor's add ".results-ingest"). Under a
# $TMPDIR longer than this, the suite's temporary directory is made under /tmp instead.
_LONGEST_TMPDIR = 12
_SHORT_BASETEMP = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None and len(tempfile.gettempdir()) > _LONGEST_TMPDIR \
            and os.path.isdir("/tmp"):
        config.option.basetemp = config.stash[_SHORT_BASETEMP] = tempfile.mkdtemp(
            prefix="zq-tests-", dir="/tmp")


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_SHORT_BASETEMP, None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)


def connect(app: App, cluster: Cluster) -> None:
    """Point a client app at ``cluster`` (dropping sockets to any earlier one)."""
    app.close()
    app.conf.update(router=cluster.router)


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One router and ``zq workers -n 2 -A tests.apps.basic``, shared by a module's tests."""
    with Cluster(tmp_path_factory.mktemp("cluster"), app=BASIC_APP, concurrency=2) as started:
        connect(basic.app, started)
        try:
            yield started
        finally:
            basic.app.close()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A file that releases ``wait_for_file`` tasks; always opened at the end of the test,
    so that no task is left holding an actor of a shared cluster."""
    path = tmp_path / "gate"
    try:
        yield path
    finally:
        path.touch()


@contextmanager
def dedicated_cluster(directory: Path, app: App = basic.app, module: str = BASIC_APP,
                      **options: Any) -> Iterator[Cluster]:
    """A cluster of one's own (to kill things in, or with special options); ``app`` is
    pointed at it for the duration and back at its previous router afterwards."""
    previous = app.settings.router
    with Cluster(directory, app=module, **options) as started:
        connect(app, started)
        try:
            yield started
        finally:
            app.close()
            app.conf.update(router=previous)


@pytest.fixture
def results(tmp_path: Path) -> Iterator[Any]:
    """A results actor in this process (memory store, ipc endpoints under tmp_path), set
    up and torn down, to be stepped by the test."""
    from zq.results import ResultsConfig
    from zq.results.actor import ResultsActor

    actor = ResultsActor(ResultsConfig(ingest=f"ipc://{tmp_path}/ingest",
                                       query=f"ipc://{tmp_path}/query",
                                       pub=f"ipc://{tmp_path}/pub", data_dir=None,
                                       backend="memory"))
    actor.setup()
    try:
        yield actor
    finally:
        actor.teardown()
