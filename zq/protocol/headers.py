"""The header of every message kind, as the processes exchange them.

Headers travel as msgpack maps; these TypedDicts say which keys each kind carries and of
what type (``total=False`` where keys are optional). Where a header enters a process it is
checked once (:mod:`.checks`) before anything relies on these types.
"""

from __future__ import annotations

from typing import Any, TypedDict


class TaskHeader(TypedDict, total=False):
    """SUBMIT (client → router) and TASK (router → actor): one task message."""

    id: str
    task: str
    ct: str                      # content type of the body: serialized [args, kwargs]
    queue: str
    exchange: str
    rk: str                      # routing key
    priority: int                # 0 (first) to 9
    eta: float                   # seconds since the epoch
    expires: float
    retries: int
    time_limit: float
    soft_time_limit: float
    acks_late: bool
    reject_on_worker_lost: bool
    max_redeliveries: int
    redeliveries: int
    redelivered: bool
    ignore_result: bool
    rate_limit: str | float
    mandatory: bool
    immediate: bool
    copy_id: str                 # one copy of a task routed to several queues
    headers: dict[str, Any]
    root_id: str
    parent_id: str
    group_id: str
    link: Any
    link_error: Any
    chain: Any
    # A chord's header task (a part): the body's task id, and this part's place among the
    # results (0-based). Both or neither. The router counts the part when it ends.
    chord: str
    chord_index: int
    # A chord's body: the router holds it until all this many parts ended SUCCESS (it sets
    # ``chord_results``), or until one ended otherwise (it sets ``chord_error``).
    chord_size: int
    # Set by the router on release: [ct, body] of each part's SUCCESS event, in index order.
    chord_results: list[list[Any]]
    # Set by the router on release when a part did not succeed: its id, name, state, exc.
    chord_error: dict[str, Any]
    # With chord_size 1: the task replaced itself; when its one part (the replacement's
    # last task) ends, the router ends this task with that part's final event.
    relay: bool
    # [body id, index] on a link before the last of a chain that is a chord part (the
    # last link carries chord/chord_index): its failure settles the part, its success not.
    chord_chain: list[Any]


class BatchHeader(TypedDict, total=False):
    """SUBMIT or TASK carrying several tasks: [header bytes, body] pairs. A TASK also
    carries the DONEs it confirms, and which of its tasks are granted: the actor may start
    those before the DONEs before them are confirmed."""

    id: str
    tasks: list[list[bytes]]
    confirm: list[list[Any]]     # [tracked id, retries]
    granted: list[int]           # indexes into tasks


class AcceptedHeader(TypedDict, total=False):
    """ACCEPTED: the task's id, or for a batch the ids taken and the errors."""

    id: str
    ids: list[str]
    errors: list[list[Any]]      # [task id or None, error class name, message]


class ErrorHeader(TypedDict, total=False):
    """ERROR: the exception class the sender should raise, with its message."""

    error: str
    message: str
    id: str
    rid: Any


class WelcomeHeader(TypedDict, total=False):
    """WELCOME: where the results actor is, the router's start id, what an actor
    re-announcing after a restart must drop, which outcomes it handed over are recorded,
    and how long it may start tasks without hearing from the router."""

    results: dict[str, str]      # ingest, query, pub endpoints
    epoch: str
    rid: Any
    drop: list[list[Any]]        # [tracked id, retries]
    confirm: list[list[Any]]     # [tracked id, retries]
    lease_s: float


class ConfirmHeader(TypedDict):
    """CONFIRM: the DONEs the router has recorded, by [tracked id, retries]."""

    done: list[list[Any]]


class StoredHeader(TypedDict):
    """STORED: the results actor stored every final event up to this journal sequence."""

    upto: int


class ControlHeader(TypedDict, total=False):
    """CONTROL (client → router, router → actor or supervisor) and its REPLY."""

    op: str
    rid: Any
    ids: list[str]
    task: str
    rate_limit: str | float | None
    terminate: bool
    signal: str
    queue: str | None
    queues: list[dict[str, str]]
    actor: bytes
    # Operations (docs/operations.md): ``inspect`` with its ``method``; the actors or
    # hosts they are for; the figures of each.
    method: str
    destination: list[str]
    limit: int
    soft: float | None
    hard: float | None
    n: int
    max: int
    min: int


class ReadyHeader(TypedDict, total=False):
    """READY: an actor's queues and credit, and what it holds after a reconnection."""

    queues: list[str]
    credit: int
    host: str
    pid: int
    supervised: bool
    holding: list[list[Any]]     # [tracked id, retries]
    declare: list[dict[str, str]]
    done: list[DoneRecord]       # outcomes not yet confirmed, handed over again
    registered: list[str]        # its app's task names (optional; for inspect)


class DoneRecord(TypedDict, total=False):
    """DONE: one finished task (or ``done``: a list of these); each returns a credit."""

    id: str                      # the tracked id
    retries: int
    event: dict[str, Any]        # its final state event
    requeue: bool                # handed back unfinished (Reject, a clean exit)
    started: bool
    # The task called replace(): its replacement (sent already) ends it; no event.
    replaced: bool
    # [body id, index]: the chord part this outcome settles, in place of the header's
    # (a chain in a chord's header that failed before its last link, which carries it).
    chord: list[Any]
    runtime: float               # seconds the body ran: how the router paces the actor


class HeartbeatHeader(TypedDict, total=False):
    """HEARTBEAT: empty from an actor; from a supervisor its host, its live actors and
    what busy ones run."""

    host: str
    actors: list[bytes]
    running: list[list[Any]]     # [actor identity, tracked id, retries]
    pool: dict[str, Any]         # the host's facts for inspect (optional; see pool_facts)


class LostHeader(TypedDict, total=False):
    """LOST: a supervisor reports one of its actors dead (or gone cleanly)."""

    actor: bytes
    reason: str
    error: str
    clean: bool
    started: str                 # the last task it started: attempt label, or ended label


class ByeHeader(TypedDict, total=False):
    """BYE: an actor's last word, or with ``host`` its supervisor's."""

    host: str


class EventsHeader(TypedDict, total=False):
    """EVENTS: state changes; from the router to the results actor with ``upto``, the
    journal sequence of the last final event among them (answered by STORED)."""

    events: list[StateEvent]
    upto: int
    # Celery-shaped events for the results actor to publish (docs/events.md), and the
    # router's epoch, which tells receivers its event clock started again.
    monitor: list[dict[str, Any]]
    epoch: str


class StateEvent(TypedDict, total=False):
    """One state change of one task (EVENTS carries a list; EVENT publishes one)."""

    id: str
    state: str
    retries: int
    name: str
    ct: str
    body: bytes
    exc: dict[str, Any]
    copy: str
    ts: float
    seq: int
    version: int
    queue: str
    # A loss the router presumed (host timeout): a real outcome of the same attempt,
    # reported later, wins over it.
    presumed: bool
    # A STARTED sent only for the task-started event (zq workers -E): not stored.
    event_only: bool


class MonitorHeader(TypedDict, total=False):
    """MONITOR (docs/events.md). A receiver's registration with the router: ``types`` and
    ``wakeup``; the router's answer: ``events`` (what it holds, as events), ``clock`` and
    ``epoch``. From the results actor to the router: ``types`` its subscribers want. As
    published under EVENTS_TOPIC: ``events`` and ``epoch``."""

    types: list[str]
    wakeup: bool
    events: list[dict[str, Any]]
    clock: int
    epoch: str
    rid: Any


class QueryHeader(TypedDict, total=False):
    """GET, WAIT, FORGET, SNAPSHOT (→ results actor) and STATES (its answer)."""

    ids: list[str] | None
    timeout_s: float
    rid: Any
    states: list[StateEvent]
    seq: int
