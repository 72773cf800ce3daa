"""``zq top``: a live terminal monitor (``celery events``' job), built with textual.

An optional extra (``pip install 'zq[top]'``). A receiver thread feeds an
``app.events.State`` with every event and asks the router for its queue depths once a
second; the screen is redrawn from them twice a second. Keys: ``r`` revokes the task
under the cursor, ``i`` revokes a task by id, ``q`` quits.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, ClassVar

from textual.app import App as TextualApp
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Input, Static

from . import states
from .events import Event, Receiver, State

# Tasks shown, the latest change first, and failures kept on screen.
_TASK_ROWS = 200
_FAILURE_ROWS = 20
# Rates are counted over this many seconds.
_RATE_WINDOW_S = 10.0
_RUNNING = (states.RECEIVED, states.STARTED)


class Feed:
    """What the screen shows, kept by the receiver thread: the events' State, task ends
    and sends per queue for the rates, and the router's queue depths."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = State(max_tasks_in_memory=5000)
        self.ended: deque[float] = deque()
        self.sent: dict[str, deque[float]] = {}
        self.depths: dict[str, int] = {}
        self.scheduled = 0
        self.error: str | None = None

    def event(self, event: Event) -> None:
        with self.lock:
            self.state.event(event)
            kind, now = event.get("type"), time.monotonic()
            if kind in ("task-succeeded", "task-failed"):
                self.ended.append(now)
            elif kind == "task-sent" and event.get("clock", 0):
                self.sent.setdefault(str(event.get("queue")), deque()).append(now)

    def rates(self) -> tuple[float, dict[str, float]]:
        """Tasks ended per second, and tasks sent per second to each queue."""
        since = time.monotonic() - _RATE_WINDOW_S
        for times in (self.ended, *self.sent.values()):
            while times and times[0] < since:
                times.popleft()
        return (len(self.ended) / _RATE_WINDOW_S,
                {queue: len(times) / _RATE_WINDOW_S for queue, times in self.sent.items()})


class Top(TextualApp[None]):
    """The monitor's screen over one zq App."""

    TITLE = "zq top"
    CSS = """
    #summary { height: 1; padding: 0 1; }
    #upper { height: 40%; }
    #workers { width: 60%; }
    #queues { width: 40%; }
    #tasks { height: 1fr; }
    #failures { height: 8; }
    #revoke-id { dock: bottom; display: none; }
    #revoke-id.shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "revoke_selected", "Revoke selected"),
        Binding("i", "revoke_by_id", "Revoke by id"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, app: Any, refresh_s: float = 0.5):
        super().__init__()
        self.zq = app
        self.refresh_s = refresh_s
        self.feed = Feed()
        self.receiver = Receiver(app, handlers={"*": self.feed.event})
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="summary")
        with Horizontal(id="upper"):
            yield DataTable(id="workers", cursor_type="none")
            yield DataTable(id="queues", cursor_type="none")
        with Vertical():
            yield DataTable(id="tasks", cursor_type="row")
            yield DataTable(id="failures", cursor_type="none")
        yield Input(placeholder="task id to revoke, then Enter (Escape: cancel)",
                    id="revoke-id")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#workers", DataTable).add_columns(
            "worker", "status", "active", "processed", "running")
        self.query_one("#queues", DataTable).add_columns("queue", "depth", "sent/s")
        self.query_one("#tasks", DataTable).add_columns(
            "task id", "name", "state", "worker", "queue", "runtime", "changed")
        self.query_one("#failures", DataTable).add_columns("failed", "task id", "name",
                                                           "exception")
        for target in (self._receive, self._poll_stats):
            thread = threading.Thread(target=target, daemon=True, name="zq-top")
            thread.start()
            self._threads.append(thread)
        self.set_interval(self.refresh_s, self.redraw)
        self.query_one("#tasks", DataTable).focus()

    def on_unmount(self) -> None:
        self.stop_feeding()

    def stop_feeding(self) -> None:
        self.receiver.should_stop = True
        self._stopping.set()
        for thread in self._threads:
            thread.join(5)

    # -- the threads that feed it ---------------------------------------------------------

    def _receive(self) -> None:
        try:
            self.receiver.capture(wakeup=True)
        except Exception as exc:  # shown on screen: the monitor stays up
            self.feed.error = f"events: {exc}"
        finally:
            self.zq.close()  # this thread's sockets

    def _poll_stats(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    stats = self.zq.control.stats()
                    with self.feed.lock:
                        self.feed.depths = dict(stats.get("queued") or {})
                        self.feed.scheduled = int(stats.get("scheduled") or 0)
                except Exception as exc:
                    self.feed.error = f"stats: {exc}"
                self._stopping.wait(1.0)
        finally:
            self.zq.close()

    # -- drawing ----------------------------------------------------------------------------

    def redraw(self) -> None:
        with self.feed.lock:
            state = self.feed.state
            per_s, sent_per_s = self.feed.rates()
            workers = list(state.workers.values())
            tasks = state.tasks_by_time(_TASK_ROWS)
            depths = dict(self.feed.depths)
            scheduled = self.feed.scheduled
        alive = sum(1 for w in workers if w.alive)
        summary = (f"workers {alive} alive · tasks/s {per_s:.1f} · scheduled {scheduled} · "
                   f"events {state.event_count}")
        if self.feed.error:
            summary += f" · {self.feed.error}"
        self.query_one("#summary", Static).update(summary)
        self._draw_workers(workers, tasks)
        self._draw_queues(depths, sent_per_s)
        self._draw_tasks(tasks)
        self._draw_failures(tasks)

    def _draw_workers(self, workers: list[Any], tasks: list[tuple[str, Any]]) -> None:
        running: dict[str, list[str]] = {}
        for task_id, task in tasks:
            if task.state in _RUNNING and task.worker is not None:
                running.setdefault(task.worker.hostname, []).append(
                    f"{task.name}[{task_id[:8]}]")
        table = self.query_one("#workers", DataTable)
        table.clear()
        for worker in sorted(workers, key=lambda w: w.hostname):
            if worker.offline and not running.get(worker.hostname):
                continue
            table.add_row(worker.hostname, worker.status_string, worker.active or 0,
                          worker.processed or 0, ", ".join(running.get(worker.hostname, [])),
                          key=worker.hostname)

    def _draw_queues(self, depths: dict[str, int], sent_per_s: dict[str, float]) -> None:
        table = self.query_one("#queues", DataTable)
        table.clear()
        for queue in sorted(set(depths) | {q for q, r in sent_per_s.items() if r}):
            table.add_row(queue, depths.get(queue, 0), f"{sent_per_s.get(queue, 0.0):.1f}",
                          key=queue)

    def _draw_tasks(self, tasks: list[tuple[str, Any]]) -> None:
        table = self.query_one("#tasks", DataTable)
        selected = self.selected_task()
        table.clear()
        for task_id, task in tasks:
            runtime = _duration(task.runtime) if isinstance(task.runtime, float) else ""
            table.add_row(task_id, task.name or "", task.state,
                          task.worker.hostname if task.worker is not None else "",
                          task.queue or "", runtime, _clock(task.timestamp), key=task_id)
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))

    def _draw_failures(self, tasks: list[tuple[str, Any]]) -> None:
        table = self.query_one("#failures", DataTable)
        table.clear()
        failed = [(i, t) for i, t in tasks if t.state == states.FAILURE][:_FAILURE_ROWS]
        for task_id, task in failed:
            table.add_row(_clock(task.failed or task.timestamp), task_id, task.name or "",
                          task.exception or "", key=task_id)

    # -- keys -------------------------------------------------------------------------------

    def selected_task(self) -> str | None:
        table = self.query_one("#tasks", DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return str(key.value) if key.value is not None else None

    def action_revoke_selected(self) -> None:
        task_id = self.selected_task()
        if task_id is None:
            self.notify("no task selected", severity="warning")
            return
        self.revoke(task_id)

    def action_revoke_by_id(self) -> None:
        field = self.query_one("#revoke-id", Input)
        field.add_class("shown")
        field.value = ""
        field.focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        field = message.input
        field.remove_class("shown")
        if message.value.strip():
            self.revoke(message.value.strip())
        self.query_one("#tasks", DataTable).focus()

    def on_key(self, event: Any) -> None:
        field = self.query_one("#revoke-id", Input)
        if event.key == "escape" and field.has_class("shown"):
            field.remove_class("shown")
            self.query_one("#tasks", DataTable).focus()

    def revoke(self, task_id: str) -> None:
        try:
            self.zq.control.revoke(task_id)
        except Exception as exc:
            self.notify(f"revoke {task_id}: {exc}", severity="error")
            return
        self.notify(f"revoked {task_id}")


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else ""


def run(app: Any) -> None:
    """Run the monitor until ``q``."""
    Top(app).run()
