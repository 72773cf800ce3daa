"""The dashboard's pages in a real headless Chromium (the system's ``chromium``, driven by
Playwright's Python API): they load without console errors, follow tasks live, show a
traceback, revoke a task and grow a worker's pool.

Skipped, with the reason, where Playwright or a Chromium cannot be found. With
``ZQ_DASHBOARD_SCREENSHOTS=DIR`` each page's screenshot is saved there (docs/img/ holds
the ones the docs show).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apps import basic
from tests.dashboard_helpers import Dashboard, basic_cluster_with_dashboard
from zq.testing import Cluster

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed (pip install playwright)")

CHROMIUM = next((path for path in ("/usr/bin/chromium", shutil.which("chromium") or "",
                                   shutil.which("chromium-browser") or "") if path
                 and os.access(path, os.X_OK)), None)
if CHROMIUM is None:
    pytest.skip("no chromium found (apt-get install -y chromium)", allow_module_level=True)

# No network here: these keep Chromium from looking anything up.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = os.environ.get("ZQ_DASHBOARD_SCREENSHOTS")


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Dashboard]]:
    with basic_cluster_with_dashboard(tmp_path_factory.mktemp("browser")) as started:
        yield started


@pytest.fixture(scope="module")
def cluster(both: tuple[Cluster, Dashboard]) -> Cluster:
    return both[0]


@pytest.fixture(scope="module")
def dash(both: tuple[Cluster, Dashboard]) -> Dashboard:
    return both[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 860})
        try:
            yield context
        finally:
            context.close()


class Page:
    """A browser tab, with every console error and uncaught exception it saw."""

    def __init__(self, context: Any, dash: Dashboard):
        self.tab = context.new_page()
        self.tab.set_default_timeout(15_000)
        self.dash = dash
        self.errors: list[str] = []
        self.tab.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.tab.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.tab.on("dialog", lambda dialog: dialog.accept())  # the confirmation step

    def open(self, path: str) -> Any:
        self.tab.goto(self.dash.url.rstrip("/") + path)
        return self.tab

    def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.tab.screenshot(path=str(Path(SHOTS) / f"dashboard-{name}.png"))

    def close(self) -> None:
        self.tab.close()


@pytest.fixture
def page(browser: Any, dash: Dashboard) -> Iterator[Page]:
    opened = Page(browser, dash)
    try:
        yield opened
        assert opened.errors == []
    finally:
        opened.close()


def test_every_page_loads_without_console_errors(page: Page, dash: Dashboard) -> None:
    done = basic.add.delay(1, 2)
    done.get(timeout=10)
    basic.add.apply_async((3, 4), queue="parked-browser")
    for i in range(6):
        basic.echo.delay(i)
    dash.wait(lambda: dash.get("/api/overview")["summary"]["queued"] >= 1, "a queued task")
    tab = page.open("/")
    tab.wait_for_selector("#card-workers")
    tab.wait_for_timeout(1200)  # charts drawn with a second poll
    page.shot("overview")
    tab = page.open("/tasks")
    tab.wait_for_selector(f"tr[data-id='{done.id}']")
    page.shot("tasks")
    tab = page.open(f"/task/{done.id}")
    tab.wait_for_selector("#result")
    page.shot("task")
    tab = page.open("/workers")
    tab.wait_for_selector("section.host tr[data-actor]")
    page.shot("workers")
    tab = page.open("/queues")
    tab.wait_for_selector("tr[data-queue='parked-browser']")
    tab.click("tr[data-queue='parked-browser'] button:text('Waiting')")
    tab.wait_for_selector("#waiting td.mono")
    page.shot("queues")
    basic.app.control.purge("parked-browser")


def test_a_task_appears_live_and_reaches_success(page: Page, gate: Path) -> None:
    tab = page.open("/tasks")
    tab.wait_for_selector("#task-count")
    tab.evaluate("window.notReloaded = true")
    result = basic.wait_for_file.delay(str(gate))
    row = f"tr[data-id='{result.id}']"
    tab.wait_for_selector(row)
    gate.touch()
    result.get(timeout=10)
    tab.wait_for_selector(f"{row}[data-state='SUCCESS']")
    assert tab.evaluate("window.notReloaded") is True


def test_a_failing_task_shows_its_traceback(page: Page) -> None:
    result = basic.fail.delay("shown in the browser")
    with pytest.raises(ValueError):
        result.get(timeout=10)
    tab = page.open(f"/task/{result.id}")
    trace = tab.wait_for_selector("#traceback")
    assert "ValueError: shown in the browser" in trace.inner_text()
    assert tab.inner_text("#task-state") == "FAILURE"


def test_a_chain_link_s_page_links_to_the_task_that_sent_it(page: Page) -> None:
    chained = (basic.add.s(1, 1) | basic.add.s(2)).delay()
    assert chained.get(timeout=10) == 4
    tab = page.open(f"/task/{chained.id}")
    tab.wait_for_function(
        f"document.querySelector('#relatives a[href=\"/task/{chained.parent.id}\"]')")
    assert "sent by" in tab.inner_text("#relatives")


def test_revoking_from_the_page_ends_a_scheduled_task_revoked(page: Page) -> None:
    result = basic.add.apply_async((2, 2), countdown=60)
    tab = page.open(f"/task/{result.id}")
    tab.wait_for_selector("#revoke:not([disabled])")
    tab.click("#revoke")
    tab.wait_for_function("document.querySelector('#task-state')?.textContent === 'REVOKED'")
    assert result.state == "REVOKED"


def test_a_workers_pool_grows_from_the_page(page: Page, cluster: Cluster) -> None:
    tab = page.open("/workers")
    tab.wait_for_selector("section.host .pool-size")
    before = int(tab.inner_text("section.host .pool-size"))
    tab.click("section.host button.grow")
    cluster.wait_for(lambda s: s["actors"] == before + 1, "one more actor", timeout_s=20)
    tab.wait_for_function(f"document.querySelectorAll('section.host tr[data-actor]').length"
                          f" === {before + 1}")
    deadline = time.monotonic() + 10
    while int(tab.inner_text("section.host .pool-size")) != before + 1:
        assert time.monotonic() < deadline, "the pool size shown did not change"
        tab.wait_for_timeout(100)
    basic.app.control.pool_shrink(1)
    cluster.wait_for(lambda s: s["actors"] == before, "back to the first pool", timeout_s=20)
