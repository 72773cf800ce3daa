"""The dashboard's picture of the cluster: recent tasks, workers and queues, in memory.

Socket-free and clock-free: the feed hands it every state change from the results
actor's stream (``apply``) and the router's inspect answers (``apply_poll``), with ``now``;
the web side reads it. At most ``max_tasks`` tasks are kept, the least recently changed
dropped first. One lock guards it: the feed's threads write, the web loop reads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from .. import serialization, states

# Results shown decoded only in these content types: the dashboard never unpickles.
_READABLE = frozenset({"application/x-msgpack", "application/json"})
_SHOWN_CHARS = 4000
_TIMELINE = 32
_RAW_KEPT = 4096
SECONDS_KEPT = 120
MINUTES_KEPT = 60
DEPTH_SAMPLES = 400
FINAL = frozenset(states.READY_STATES)
# Per-second and per-minute counts kept for the charts.
COUNTED = ("received", "succeeded", "failed", "retried")


# What a task's relatives are called in its states (zq.router.core._relatives).
_RELATIVES = ("parent_id", "root_id", "group_id", "chord_id")


@dataclass
class TaskRow:
    """What the dashboard knows of one task."""

    id: str
    name: str | None = None
    state: str = states.PENDING
    retries: int = 0
    received: float | None = None
    started: float | None = None
    ended: float | None = None
    timeline: list[tuple[str, float]] = field(default_factory=list)
    result: Any = None
    exception: str | None = None
    traceback: str | None = None
    worker: str | None = None
    queue: str | None = None
    args: Any = None
    kwargs: Any = None
    eta: float | None = None
    where: str | None = None
    changed: int = 0
    # A small result as it came (content type, body), decoded only when shown.
    raw: tuple[str, bytes] | None = None
    # How long its body ran, as its final state says (its actor measured it).
    ran: float | None = None
    # Its relatives, as SENT says them: parent_id, root_id, group_id, chord_id.
    relatives: dict[str, str] = field(default_factory=dict)

    def runtime(self) -> float | None:
        if self.ran is not None:
            return round(self.ran, 6)
        if self.ended is None:
            return None
        begin = self.started if self.started is not None else self.received
        return None if begin is None else max(0.0, round(self.ended - begin, 6))

    def as_json(self, full: bool = True) -> dict[str, Any]:
        """The task as the API shows it (Flower's field names where Flower has them)."""
        out: dict[str, Any] = {
            "uuid": self.id, "id": self.id, "name": self.name, "state": self.state,
            "retries": self.retries, "received": self.received, "started": self.started,
            "timestamp": self.ended or self.started or self.received,
            "runtime": self.runtime(), "worker": self.worker, "queue": self.queue,
            "exception": self.exception, "eta": self.eta,
        }
        if full:
            out["relatives"] = dict(self.relatives)
            if self.raw is not None:
                self.result, self.raw = _decode(*self.raw), None
            out.update(args=self.args, kwargs=self.kwargs, result=self.result,
                       traceback=self.traceback, where=self.where,
                       timeline=[{"state": s, "ts": ts} for s, ts in self.timeline])
            out["succeeded"] = self.ended if self.state == states.SUCCESS else None
            out["failed"] = self.ended if self.state == states.FAILURE else None
        return out


def shown(value: Any) -> Any:
    """``value`` as JSON can carry it, cut to a few thousand characters."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
    if isinstance(value, (list, tuple, dict)):
        text = repr(value)
        if len(text) <= _SHOWN_CHARS:
            return _plain(value)
        return text[:_SHOWN_CHARS] + "…"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def _decode(ct: str, body: bytes) -> Any:
    if ct not in _READABLE:
        return f"<{len(body)} bytes of {ct}>"
    try:
        return shown(serialization.loads(body, ct, _READABLE))
    except Exception:
        return "<unreadable>"


class Buckets:
    """Counts per period (second or minute) for the last ``kept`` periods."""

    def __init__(self, period_s: int, kept: int):
        self.period_s = period_s
        self.kept = kept
        self.rows: deque[tuple[int, list[int]]] = deque()

    def add(self, ts: float, column: int) -> None:
        start = int(ts // self.period_s) * self.period_s
        if self.rows and self.rows[-1][0] == start:
            self.rows[-1][1][column] += 1
            return
        if self.rows and start < self.rows[-1][0]:
            # Late (another host's clock, or a state stamped before a later one): counted
            # in the period it falls in when kept, else the newest.
            for when, counts in reversed(self.rows):
                if when <= start:
                    counts[column] += 1
                    return
            self.rows[0][1][column] += 1
            return
        counts = [0] * len(COUNTED)
        counts[column] = 1
        self.rows.append((start, counts))
        while len(self.rows) > self.kept:
            self.rows.popleft()

    def series(self, now: float) -> list[dict[str, Any]]:
        """Every period of the window ending now, empty ones included."""
        by_start = dict(self.rows)
        last = int(now // self.period_s) * self.period_s
        out = []
        for i in range(self.kept - 1, -1, -1):
            start = last - i * self.period_s
            counts = by_start.get(start, [0] * len(COUNTED))
            out.append({"t": start, **dict(zip(COUNTED, counts))})
        return out


class View:
    """Recent tasks (at most ``max_tasks``), workers and queues, and counts for charts."""

    def __init__(self, max_tasks: int = 10_000):
        self.max_tasks = max_tasks
        self.lock = threading.Lock()
        self.tasks: OrderedDict[str, TaskRow] = OrderedDict()
        self.seq = 0  # one per change applied; a row's ``changed`` is the seq of its last
        self.events = 0
        self.by_state: dict[str, int] = {}
        self.seconds = Buckets(1, SECONDS_KEPT)
        self.minutes = Buckets(60, MINUTES_KEPT)
        # The router's and the workers' answers, as last polled.
        self.poll_seq = 0
        self.polled_at: float | None = None
        self.router_up = False
        self.results_up = False
        self.router: dict[str, Any] = {}
        self.actors: dict[str, dict[str, Any]] = {}
        self.hosts: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.registered: list[str] = []
        self.depths: deque[tuple[float, dict[str, int]]] = deque(maxlen=DEPTH_SAMPLES)
        self._processed: dict[str, int] = {}

    # -- the state stream -----------------------------------------------------------------

    def apply(self, event: dict[str, Any], now: float) -> TaskRow | None:
        """Take one state change from the stream; return the row it changed."""
        task_id = event.get("id")
        state = event.get("state")
        if not isinstance(task_id, str) or not isinstance(state, str):
            return None
        ts = event.get("ts")
        ts = float(ts) if isinstance(ts, (int, float)) else now
        with self.lock:
            row = self.tasks.get(task_id)
            if row is None:
                row = self.tasks[task_id] = TaskRow(task_id)
                if len(self.tasks) > self.max_tasks:
                    _, dropped = self.tasks.popitem(last=False)
                    self._count_state(dropped.state, -1)
            else:
                self.tasks.move_to_end(task_id)
            self.seq += 1
            self.events += 1
            self._count_state(row.state, -1 if row.timeline else 0)
            self._count_state(state, 1)
            previous = row.state
            row.state = state
            row.changed = self.seq
            name = event.get("name")
            if isinstance(name, str):
                row.name = name
            retries = event.get("retries")
            if isinstance(retries, int):
                row.retries = retries
            if len(row.timeline) < _TIMELINE:
                row.timeline.append((state, ts))
            self._on_state(row, previous, state, ts, event)
            return row

    def _on_state(self, row: TaskRow, previous: str, state: str, ts: float,
                  event: dict[str, Any]) -> None:
        if isinstance(event.get("queue"), str) and row.queue is None:
            row.queue = event["queue"]
        for key in _RELATIVES:
            if isinstance(event.get(key), str):
                row.relatives[key] = event[key]
        if state in (states.SENT, states.PENDING, states.RECEIVED) or row.received is None:
            if row.received is None:
                row.received = ts
                self._count(ts, 0)
        if state == states.STARTED:
            row.started = ts
            if isinstance(event.get("hostname"), str) and row.worker is None:
                row.worker = event["hostname"]
        elif state == states.RETRY:
            self._count(ts, 3)
            self._exception(row, event)
        elif state in FINAL:
            row.ended = ts
            row.where = None
            if isinstance(event.get("runtime"), (int, float)):
                row.ran = float(event["runtime"])
            if isinstance(event.get("worker"), str):
                row.worker = event["worker"]
            if state == states.SUCCESS:
                self._result(row, event)
                self._count(ts, 1)
            else:
                self._exception(row, event)
                if state == states.FAILURE:
                    self._count(ts, 2)
        elif "body" in event:
            self._result(row, event)  # a custom state's meta

    @staticmethod
    def _result(row: TaskRow, event: dict[str, Any]) -> None:
        body, ct = event.get("body"), event.get("ct") or ""
        if not isinstance(body, bytes):
            row.result, row.raw = None, None
        elif len(body) <= _RAW_KEPT:
            row.result, row.raw = None, (ct, body)  # decoded when shown: most never are
        else:
            row.result, row.raw = _decode(ct, body), None

    @staticmethod
    def _exception(row: TaskRow, event: dict[str, Any]) -> None:
        exc = event.get("exc")
        if isinstance(exc, dict):
            row.exception = shown(f"{exc.get('type')}({exc.get('message')!r})")
            row.traceback = shown(exc.get("traceback")) if exc.get("traceback") else None

    def _count(self, ts: float, column: int) -> None:
        self.seconds.add(ts, column)
        self.minutes.add(ts, column)

    def _count_state(self, state: str, delta: int) -> None:
        if delta:
            self.by_state[state] = self.by_state.get(state, 0) + delta

    def note_sent(self, task_id: str, name: str, args: Any, kwargs: Any,
                  queue: str | None) -> None:
        """What the dashboard itself sent: its arguments are known here."""
        with self.lock:
            row = self.tasks.get(task_id)
            if row is None:
                row = self.tasks[task_id] = TaskRow(task_id, name=name)
            row.args, row.kwargs, row.queue = shown(args), shown(kwargs), queue

    # -- reading ----------------------------------------------------------------------------

    def changed_since(self, seq: int, limit: int) -> tuple[list[dict[str, Any]], int, bool]:
        """The rows changed after ``seq`` (newest first, at most ``limit``), the seq they
        bring the reader to, and whether more changed than were given."""
        rows: list[dict[str, Any]] = []
        more = False
        with self.lock:
            for row in reversed(self.tasks.values()):
                if row.changed <= seq:
                    break
                if len(rows) >= limit:
                    more = True
                    break
                rows.append(row.as_json(full=False))
            return rows, self.seq, more

    def task(self, task_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.tasks.get(task_id)
            return row.as_json() if row is not None else None

    def find(self, *, state: str | None = None, name: str | None = None,
             worker: str | None = None, queue: str | None = None,
             search: str | None = None, since: float | None = None,
             until: float | None = None, offset: int = 0, limit: int = 100,
             ) -> tuple[list[dict[str, Any]], int]:
        """Tasks matching every filter given, most recently changed first, and how many
        matched in all."""
        needle = search.lower() if search else None
        out: list[dict[str, Any]] = []
        matched = 0
        with self.lock:
            for row in reversed(self.tasks.values()):
                if state and row.state != state:
                    continue
                if name and row.name != name:
                    continue
                if worker and not (row.worker or "").startswith(worker):
                    continue
                if queue and row.queue != queue:
                    continue
                when = row.received or row.ended or 0.0
                if since is not None and when < since:
                    continue
                if until is not None and when > until:
                    continue
                if needle and not _mentions(row, needle):
                    continue
                matched += 1
                if offset < matched <= offset + limit:
                    out.append(row.as_json(full=False))
        return out, matched

    def summary(self, now: float) -> dict[str, Any]:
        """What the overview shows: counts, rates, workers, queues."""
        with self.lock:
            last = self.seconds.series(now)[-11:-1]  # the last ten whole seconds
            minute = self.minutes.series(now)[-1]
            return {
                "tasks": len(self.tasks), "events": self.events, "seq": self.seq,
                "by_state": {s: n for s, n in self.by_state.items() if n},
                "tasks_per_s": round(sum(r["succeeded"] + r["failed"] for r in last) / 10, 2),
                "received_per_s": round(sum(r["received"] for r in last) / 10, 2),
                "this_minute": minute,
                "workers_up": len(self.actors), "hosts_up": len(self.hosts),
                "queued": sum(q["depth"] for q in self.queues.values()),
                "router_up": self.router_up, "results_up": self.results_up,
                "polled_at": self.polled_at, "poll_seq": self.poll_seq,
            }

    def series(self, now: float) -> dict[str, Any]:
        with self.lock:
            return {"per_second": self.seconds.series(now),
                    "per_minute": self.minutes.series(now),
                    "depths": [{"t": t, "depths": d} for t, d in self.depths]}

    # -- the router's answers -------------------------------------------------------------

    def apply_poll(self, poll: dict[str, Any], now: float) -> None:
        """Take one round of inspect answers: ``stats`` (with the router's own under
        ``router``), ``active``, ``reserved``, ``scheduled``, ``conf``, ``registered``."""
        stats = dict(poll.get("stats") or {})
        router = stats.pop("router", None) or poll.get("router") or {}
        active = poll.get("active") or {}
        reserved = poll.get("reserved") or {}
        elapsed = now - self.polled_at if self.polled_at else None
        with self.lock:
            self.router_up = True
            self.router = router
            self.poll_seq += 1
            self.polled_at = now
            actors: dict[str, dict[str, Any]] = {}
            hosts: dict[str, dict[str, Any]] = {}
            for name, facts in stats.items():
                if not isinstance(facts, dict):
                    continue
                running = (active.get(name) or [None])[0]
                processed = sum(v for v in (facts.get("total") or {}).values()
                                if isinstance(v, int))
                actors[name] = {
                    "name": name, "host": facts.get("hostname"), "pid": facts.get("pid"),
                    "uptime": facts.get("uptime"), "processed": processed,
                    "total": facts.get("total") or {}, "queues": facts.get("queues") or [],
                    "prefetch": facts.get("prefetch_count"),
                    "running": _brief(running), "reserved": len(reserved.get(name) or []),
                    "rate": _rate(processed - self._processed.get(name, processed), elapsed),
                }
                self._processed[name] = processed
                pool = facts.get("pool") or {}
                host = _host_of(name)
                known = hosts.setdefault(host, {
                    "name": host, "hostname": facts.get("hostname"), "actors": [],
                    "pool_size": pool.get("max-concurrency"), "pid": pool.get("supervisor_pid"),
                    "uptime": pool.get("supervisor_uptime"),
                    "autoscale": pool.get("autoscaler"), "prefetch": pool.get("prefetch"),
                    "conf": (poll.get("conf") or {}).get(host, {})})
                known["actors"].append(name)
            for host in router.get("hosts") or []:
                hosts.setdefault(host, {"name": host, "actors": []})
            self.actors, self.hosts = actors, hosts
            self._requests(active, reserved, poll.get("scheduled") or {})
            self._queues(router, actors, now)
            if poll.get("registered"):
                names = {n for names in poll["registered"].values() for n in names or []}
                self.registered = sorted(names)

    def _requests(self, active: dict[str, Any], reserved: dict[str, Any],
                  scheduled: dict[str, Any]) -> None:
        """Arguments, worker and queue of the tasks the router holds, as it shows them."""
        for where, held in (("active", active), ("reserved", reserved)):
            for actor, requests in held.items():
                for request in requests or []:
                    self._learn(request, actor, where)
        for item in scheduled.get("router") or []:
            row = self._learn(item.get("request") or {}, None, "scheduled")
            if row is not None and isinstance(item.get("eta_ts"), (int, float)):
                row.eta = float(item["eta_ts"])

    def _learn(self, request: dict[str, Any], actor: str | None, where: str) -> TaskRow | None:
        row = self.tasks.get(request.get("id") or "")
        if row is None or row.state in FINAL:
            return row
        row.args, row.kwargs = shown(request.get("args")), shown(request.get("kwargs"))
        queue = (request.get("delivery_info") or {}).get("queue")
        row.queue = queue if isinstance(queue, str) else row.queue
        row.worker = actor or row.worker
        row.where = where
        return row

    def _queues(self, router: dict[str, Any], actors: dict[str, dict[str, Any]],
                now: float) -> None:
        depths = {str(q): int(n) for q, n in (router.get("queued") or {}).items()}
        consumers: dict[str, list[str]] = {}
        for name, actor in actors.items():
            for q in actor["queues"]:
                consumers.setdefault(q, []).append(name)
                depths.setdefault(q, 0)
        for q in list(self.queues):
            depths.setdefault(q, 0)  # a queue seen once stays listed, at 0
        self.depths.append((now, depths))
        self.queues = {
            q: {"name": q, "depth": n, "consumers": sorted(consumers.get(q, [])),
                # What its consumers finish per second, shared among their queues.
                "rate": round(sum(actors[a]["rate"] / max(1, len(actors[a]["queues"]))
                                  for a in consumers.get(q, [])), 2)}
            for q, n in sorted(depths.items())}

    def router_down(self) -> None:
        with self.lock:
            self.router_up = False

    def workers(self) -> dict[str, Any]:
        with self.lock:
            return {"hosts": [dict(h) for h in self.hosts.values()],
                    "actors": {n: dict(a) for n, a in self.actors.items()},
                    "registered": list(self.registered), "poll_seq": self.poll_seq}


def _mentions(row: TaskRow, needle: str) -> bool:
    if row.raw is not None:
        row.result, row.raw = _decode(*row.raw), None
    for value in (row.id, row.name, row.worker, row.exception, row.args, row.kwargs,
                  row.result):
        if value is not None and needle in str(value).lower():
            return True
    return False


def _brief(request: Any) -> dict[str, Any] | None:
    if not isinstance(request, dict):
        return None
    return {"id": request.get("id"), "name": request.get("name"),
            "time_start": request.get("time_start")}


def _rate(delta: int, elapsed: float | None) -> float:
    return round(delta / elapsed, 2) if elapsed and delta > 0 else 0.0


def _host_of(actor: str) -> str:
    """An actor's host: its name is ``host/index/generation``."""
    return actor.split("/", 1)[0]
