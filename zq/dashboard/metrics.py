"""Prometheus metrics: Flower's series under zq's names, and the cluster's health.

Counters and the runtime histogram are fed event by event; the gauges are read from the
view when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .view import View

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Task names become labels: past this many, the rest are counted under "other".
_MAX_NAMES = 500


class Metrics:
    """One registry per dashboard (never the process-global one)."""

    def __init__(self, view: View):
        # A *_created series per label set only doubles the text.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("zq_events", "Task state changes seen, by task name and state",
                              ["task", "state"], registry=self.registry)
        self.runtime = Histogram(
            "zq_task_runtime_seconds", "Seconds a task's body ran (as its actor measured; else from STARTED, else SENT, to its final state)",
            ["task"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, float("inf")))
        self._names: set[str] = set()
        # The labelled children, looked up once: observe runs for every state change.
        self._counters: dict[tuple[str | None, str], Any] = {}
        self._histograms: dict[str | None, Any] = {}
        self.registry.register(_Gauges(view))

    def observe(self, name: str | None, state: str, runtime_s: float | None) -> None:
        counter = self._counters.get((name, state))
        if counter is None:
            counter = self.events.labels(self._label(name), state)
            if len(self._counters) < _MAX_NAMES * 4:
                self._counters[(name, state)] = counter
        counter.inc()
        if runtime_s is not None:
            histogram = self._histograms.get(name)
            if histogram is None:
                histogram = self.runtime.labels(self._label(name))
                if len(self._histograms) < _MAX_NAMES:
                    self._histograms[name] = histogram
            histogram.observe(runtime_s)

    def _label(self, name: str | None) -> str:
        if name is None:
            return "unknown"
        if name in self._names:
            return name
        if len(self._names) >= _MAX_NAMES:
            return "other"
        self._names.add(name)
        return name

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Gauges(Collector):
    def __init__(self, view: View):
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view
        with view.lock:
            router = dict(view.router)
            queues = {q: dict(v) for q, v in view.queues.items()}
            actors = {a: dict(v) for a, v in view.actors.items()}
            up = (view.router_up, view.results_up, len(view.hosts), len(view.tasks))
        yield _gauge("zq_router_up", "1 when the router answered the last poll", up[0])
        yield _gauge("zq_results_up", "1 while the results actor's state stream is followed",
                     up[1])
        yield _gauge("zq_workers_up", "Actor processes connected to the router", len(actors))
        yield _gauge("zq_worker_hosts_up", "Worker hosts (supervisors) connected", up[2])
        yield _gauge("zq_dashboard_tasks", "Tasks the dashboard keeps in memory", up[3])
        for key, doc in (("tasks", "Tasks the router holds"),
                         ("inflight", "Tasks handed to actors and not finished"),
                         ("scheduled", "Tasks waiting for their ETA or a rate-limit slot"),
                         ("chords_waiting", "Chord bodies waiting for their parts")):
            value = router.get(key)
            if isinstance(value, (int, float)):
                yield _gauge(f"zq_router_{key}", doc, value)
        journal = router.get("journal") or {}
        if router:
            yield _gauge("zq_router_journal_ok", "0 while the journal refuses writes",
                         0 if journal.get("failure") else 1)
        depth = GaugeMetricFamily("zq_queue_depth", "Tasks waiting in a queue", labels=["queue"])
        for name, q in queues.items():
            depth.add_metric([name], q["depth"])
        yield depth
        online = GaugeMetricFamily("zq_worker_online", "1 per connected actor",
                                   labels=["worker"])
        running = GaugeMetricFamily("zq_worker_number_of_currently_executing_tasks",
                                    "Tasks an actor runs now", labels=["worker"])
        for name, actor in actors.items():
            online.add_metric([name], 1)
            running.add_metric([name], 1 if actor.get("running") else 0)
        yield online
        yield running


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
