"""``zq top`` driven with textual's pilot against a real cluster, and ``zq watch``'s lines."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.apps import basic
from tests.apps.basic import add, fail
from tests.conftest import dedicated_cluster
from zq import states

pytest.importorskip("textual")

from textual.widgets import DataTable  # noqa: E402

from zq.top import Top  # noqa: E402

pytestmark = pytest.mark.timeout(120)

app = basic.app


async def until(pilot: Any, predicate: Callable[[], Any], what: str,
                timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await pilot.pause(0.1)


def cell(top: Top, table_id: str, row: str, column: int) -> Any:
    table = top.query_one(table_id, DataTable)
    if row not in table.rows:
        return None
    return table.get_row(row)[column]


def shown(top: Top, table_id: str) -> list[str]:
    table = top.query_one(table_id, DataTable)
    return [str(key.value) for key in table.rows]


async def drive(top: Top) -> None:
    async with top.run_test(size=(180, 50)) as pilot:
        await until(pilot, lambda: len(shown(top, "#workers")) >= 2, "two workers on screen")

        ok = add.delay(2, 3)
        await until(pilot, lambda: cell(top, "#tasks", ok.id, 2) == states.SUCCESS,
                    "the task to show SUCCESS")
        assert cell(top, "#tasks", ok.id, 1) == "tests.apps.basic.add"

        bad = fail.delay("boom")
        await until(pilot, lambda: bad.id in shown(top, "#failures"), "the failure listed")
        assert "ValueError('boom')" in cell(top, "#failures", bad.id, 3)

        later = add.apply_async((1, 1), countdown=60)
        await until(pilot, lambda: cell(top, "#tasks", later.id, 2) == states.PENDING,
                    "the scheduled task on screen")
        table = top.query_one("#tasks", DataTable)
        table.move_cursor(row=table.get_row_index(later.id))
        assert top.selected_task() == later.id
        await pilot.press("r")
        await until(pilot, lambda: cell(top, "#tasks", later.id, 2) == states.REVOKED,
                    "the selected task revoked")
        assert later.state == states.REVOKED

        typed = add.apply_async((2, 2), countdown=60)
        await until(pilot, lambda: typed.id in shown(top, "#tasks"), "the second one")
        await pilot.press("i")
        await pilot.press(*typed.id, "enter")
        await until(pilot, lambda: cell(top, "#tasks", typed.id, 2) == states.REVOKED,
                    "the task revoked by id")
        assert typed.state == states.REVOKED

        await pilot.press("q")
    assert top.return_code in (0, None)


def test_top_shows_tasks_and_failures_and_revokes(tmp_path):
    with dedicated_cluster(tmp_path / "c", concurrency=2):
        top = Top(app, refresh_s=0.2)
        try:
            asyncio.run(drive(top))
        finally:
            top.stop_feeding()
            app.close()
        assert not any(t.is_alive() for t in top._threads)


def test_watch_prints_readable_lines_in_local_time(tmp_path):
    with dedicated_cluster(tmp_path / "c", concurrency=1) as cluster:
        result = add.delay(20, 22)
        assert result.get(timeout=10) == 42
        done = subprocess.run(
            [*_zq(), "watch", result.id, "--timeout", "1", "--router", cluster.router],
            env=cluster.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    day = time.strftime("%Y-%m-%d")
    assert line.startswith(day), line
    assert "SUCCESS" in line and f"tests.apps.basic.add[{result.id}]" in line
    assert line.rstrip().endswith("42")


def _zq() -> list[str]:
    import sys

    return [sys.executable, "-m", "zq"]
