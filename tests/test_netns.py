"""Worker hosts on a real network, cut and healed (issue 9: "No double run across a network
cut"; docs/guarantees.md).

The router, its results actor and a client run in one network namespace; two ``zq workers``
hosts (A and B) each run in a namespace of their own, joined to the router's by a bridge
(``tests/netns.py``). Cutting A sets its port on the bridge down: nothing errors, packets
just stop, as when a cable is pulled. The test process cannot reach that network itself, so
it drives a client running inside it (``tests/apps/partition_client.py``) through pipes,
and counts what ran from the files the tasks (``tests/apps/partition.py``) write: each run
of a body is one line with the task id, the PID that ran it and its start time, and one
more line when the body returned. A PID tells the host: every actor is a child of its
host's ``zq workers``.

The long cut (``cut`` fixture, several tests reading its outcome): A runs two actors with
``--prefetch 2``, each holding one task that runs (early-ack E, acks_late L, each waiting
on a gate) and one prefetched behind it (early-ack P1, P2), while B works through a queue
of 0.5 s tasks, early-ack and acks_late mixed. A is cut for 10 s, with the router's
``--host-timeout`` 4 s. E's gate opens 0.5 s into the cut, L's 2.5 s into it: both finish
on A while it is cut off, and A could start P1 and P2 then: 0.5 s is inside any lease an
actor might keep from the last word it heard, 2.5 s is past one of half the host timeout,
and both are before the router can declare A lost. After the heal, A must rejoin and take
tasks again.

The short cut lasts 1 s and must change nothing. (After a cut of c seconds TCP may wait up
to about c more before its next retransmission, so the router hears nothing from A for up
to one heartbeat plus 2c: 3 s, under the 4 s host timeout.)
"""

from __future__ import annotations

import json
import select
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest

from tests import netns
from tests.netns import Host, Lan, Started

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.partition"
HOST_TIMEOUT_S = 4.0
HEARTBEAT_S = 1.0
HOUSEKEEPING_S = 1.0  # how often the router looks for silent hosts
CUT_S = 10.0
BLIP_S = 1.0
EARLY_ACK = {"hold", "nap"}


@pytest.fixture(scope="module", autouse=True)
def namespaces_available() -> None:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"multi-host tests need network namespaces: {reason}")


# -- what the tasks recorded -------------------------------------------------------------


class Run(NamedTuple):
    task_id: str
    pid: int
    redelivered: bool
    started: float


def read_runs(path: Path) -> list[Run]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        task_id, pid, redelivered, started = line.split()
        found.append(Run(task_id, int(pid), redelivered == "1", float(started)))
    return found


def actor_pids(host: Started) -> set[int]:
    """The live children of a ``zq workers`` process: its actors."""
    try:
        return {child.pid for child in psutil.Process(host.pid).children()}
    except psutil.NoSuchProcess:
        return set()


# -- a router and a client in the hub, worker hosts in namespaces of their own -------------


class Deployment:
    """The processes of one test on a :class:`Lan`; the router listens on the hub's address
    (a fixed port: the namespace is this test's own, nothing else can hold it)."""

    def __init__(self, lan: Lan, directory: Path):
        self.lan = lan
        self.dir = directory
        self.endpoint = f"tcp://{lan.hub_address}:5555"
        self.env = netns.env_with_pythonpath(ROOT)
        self.router: Started | None = None
        self.client: Started | None = None
        self.workers: dict[str, Started] = {}

    def start(self) -> None:
        self.router = self.lan.spawn(
            self.lan.hub, [sys.executable, "-m", "zq", "router", "--bind", self.endpoint,
                           "--data-dir", str(self.dir / "data"),
                           "--host-timeout", str(HOST_TIMEOUT_S)],
            self.dir / "router.log", self.env, cwd=ROOT)
        self.client = self.lan.spawn(
            self.lan.hub, [sys.executable, "-m", "tests.apps.partition_client", self.endpoint],
            self.dir / "client.log", self.env, cwd=ROOT, pipes=True)
        self.wait_for(lambda s: True, "the router to answer", timeout_s=20)

    def start_workers(self, host: Host, role: str, actors: int) -> Started:
        expected = self.stats_now()["actors"] + actors
        process = self.lan.spawn(
            host, [sys.executable, "-m", "zq", "workers", "-A", APP, "-n", str(actors),
                   "--prefetch", "2", "--router", self.endpoint,
                   "--heartbeat-interval", str(HEARTBEAT_S), "--shutdown-timeout", "2"],
            self.dir / f"workers-{role}.log", self.env, cwd=ROOT)
        self.workers[role] = process
        self.wait_for(lambda s: s["actors"] >= expected, f"{expected} actors", timeout_s=30)
        return process

    def ask(self, request: dict[str, Any], timeout_s: float = 15.0) -> Any:
        assert self.client is not None and self.client.popen.stdin is not None
        stdin, stdout = self.client.popen.stdin, self.client.popen.stdout
        assert stdout is not None
        stdin.write((json.dumps(request) + "\n").encode())
        stdin.flush()
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        if not ready:
            pytest.fail(f"the client did not answer {request['op']} within {timeout_s}s:\n"
                        f"{self.client.log()[-3000:]}")
        line = stdout.readline()
        if not line:
            pytest.fail(f"the client exited:\n{self.client.log()[-3000:]}")
        return json.loads(line)

    def stats(self) -> dict[str, Any] | None:
        return self.ask({"op": "stats"})  # type: ignore[no-any-return]

    def stats_now(self) -> dict[str, Any]:
        stats = self.stats()
        assert stats is not None, "the router does not answer"
        return stats

    def submit(self, tasks: list[tuple[str, list[Any]]]) -> list[str]:
        return self.ask({"op": "submit", "tasks": tasks})  # type: ignore[no-any-return]

    def states(self, ids: list[str]) -> dict[str, list[str]]:
        return self.ask({"op": "states", "ids": ids}, timeout_s=30)  # type: ignore[no-any-return]

    def wait_for(self, predicate: Callable[[dict[str, Any]], Any], what: str,
                 timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in [self.router, *self.workers.values()]:
                if process is not None and not process.alive():
                    pytest.fail(f"{process.log_path.name}: exited while waiting for {what}:"
                                f"\n{process.log()[-3000:]}")
            stats = self.stats()
            if stats is not None and predicate(stats):
                return stats
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout_s}s waiting for {what}:\n{self.logs()}")

    def host_name(self, role: str) -> str:
        """The name the router knows the host ``role`` by (its supervisor's PID is in it)."""
        pid = self.workers[role].pid
        names = [h for h in self.stats_now()["hosts"] if f"-{pid}-" in h]
        assert len(names) == 1, f"host {role} (pid {pid}) not among the router's hosts"
        return names[0]

    def logs(self, tail: int = 6000) -> str:
        parts = []
        for process in [self.router, self.client, *self.workers.values()]:
            if process is not None:
                parts.append(f"===== {process.log_path.name}\n{process.log()[-tail:]}")
        return "\n".join(parts)


@dataclass(repr=False)
class Outcome:
    """What one scenario measured: ids by role, every run, final states, times (time.time)."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    ended: list[Run] = field(default_factory=list)
    states: dict[str, list[str]] = field(default_factory=dict)
    pids: dict[str, set[int]] = field(default_factory=dict)
    cut_at: float = 0.0
    healed_at: float = 0.0
    lost_at: float | None = None
    rejoined_at: float | None = None
    a_survived: bool = False
    hosts_seen: list[tuple[float, int, int]] = field(default_factory=list)
    router_log: str = ""
    logs: str = ""

    def add(self, role: str, tasks: list[tuple[str, list[Any]]], ids: list[str]) -> None:
        self.ids[role] = ids
        for (name, _), task_id in zip(tasks, ids):
            self.kind[task_id] = name

    def __repr__(self) -> str:
        return f"Outcome({self.summary()})"

    def all_ids(self) -> list[str]:
        return [task_id for ids in self.ids.values() for task_id in ids]

    def runs_of(self, task_id: str) -> list[Run]:
        return [run for run in self.runs if run.task_id == task_id]

    def host_of(self, run: Run) -> str:
        return next((role for role, pids in self.pids.items() if run.pid in pids), "?")

    def describe(self, task_id: str) -> str:
        where = [f"{self.host_of(r)}@{r.started - self.cut_at:+.1f}s"
                 f"{' redelivered' if r.redelivered else ''}" for r in self.runs_of(task_id)]
        state = self.states.get(task_id, ["?", ""])
        return (f"{self.kind[task_id]} {task_id[:8]}: {state[0]} {state[1][:80]}, "
                f"runs {where} (times relative to the cut)")

    def summary(self) -> str:
        counts = {task_id: len(self.runs_of(task_id)) for task_id in self.all_ids()}
        early = [i for i in counts if self.kind[i] in EARLY_ACK]
        late = [i for i in counts if self.kind[i] not in EARLY_ACK]
        lost = [i for i in counts if self.states.get(i, [""])[0] != "SUCCESS"]
        lost_after = "never" if self.lost_at is None else \
            f"{self.lost_at - self.cut_at:.2f}s after the cut"
        rejoined = "not seen" if self.rejoined_at is None else \
            f"{self.rejoined_at - self.healed_at:.2f}s after the heal"
        return (f"submitted {len(counts)} ({len(early)} early-ack, {len(late)} acks_late); "
                f"not SUCCESS {len(lost)}; never ran {sum(1 for n in counts.values() if not n)}; "
                f"early-ack run twice {sum(1 for i in early if counts[i] > 1)}; "
                f"acks_late run twice {sum(1 for i in late if counts[i] > 1)}; "
                f"host loss declared {lost_after}; rejoined {rejoined}")


def listing(what: str, lines: list[str]) -> str:
    return "\n  ".join([what + ":", *lines])


def collect(outcome: Outcome, deployment: Deployment, log: Path) -> None:
    outcome.runs = read_runs(log)
    outcome.ended = read_runs(log.with_name(log.name + ".ended"))
    assert deployment.router is not None
    outcome.router_log = deployment.router.log()
    outcome.logs = deployment.logs(tail=10**7)


def settle(deployment: Deployment, outcome: Outcome, timeout_s: float) -> None:
    """Wait (without failing) until every id is SUCCESS, or until ``timeout_s`` has passed
    and every id is at least in a final state; keep the states found last."""
    deadline = time.monotonic() + timeout_s
    ids = outcome.all_ids()
    while True:
        outcome.states = deployment.states(ids)
        found = [state for state, _ in outcome.states.values()]
        if all(s == "SUCCESS" for s in found):
            return
        final = all(s in ("SUCCESS", "FAILURE", "REVOKED") for s in found)
        if time.monotonic() > deadline and (final or time.monotonic() > deadline + 15):
            return
        time.sleep(0.3)


def watch_hosts(deployment: Deployment, outcome: Outcome, name: str, until: float,
                actions: dict[float, Callable[[], None]]) -> None:
    """Poll the router's view until ``until`` (time.time), running each action once its
    time has come; note when host ``name`` first disappears from it."""
    pending = sorted(actions.items())
    while time.time() < until:
        while pending and time.time() >= pending[0][0]:
            pending.pop(0)[1]()
        stats = deployment.stats()
        now = time.time()
        if stats is not None:
            outcome.hosts_seen.append((now, len(stats["hosts"]), stats["actors"]))
            if name not in stats["hosts"] and outcome.lost_at is None:
                outcome.lost_at = now
        time.sleep(0.1)
    for _, action in pending:
        action()


# -- a 10 s cut of one host --------------------------------------------------------------


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    directory = tmp_path_factory.mktemp("netns-cut")
    log = directory / "runs.log"
    gate_early, gate_late = directory / "gate-early", directory / "gate-late"
    outcome = Outcome()
    with Lan() as lan:
        a, b = lan.add_host("a"), lan.add_host("b")
        deployment = Deployment(lan, directory)
        try:
            deployment.start()
            host_a = deployment.start_workers(a, "a", 2)
            # One dispatch round per pass over the hungry actors: each of A's two actors
            # gets one of the first two tasks, to run, and one of the last two, prefetched.
            held: list[tuple[str, list[Any]]] = [
                ("hold", [str(log), str(gate_early)]), ("hold_late", [str(log), str(gate_late)]),
                ("nap", [str(log), 0.2]), ("nap", [str(log), 0.2])]
            ids = deployment.submit(held)
            outcome.add("running", held[:2], ids[:2])
            outcome.add("prefetched", held[2:], ids[2:])
            deployment.wait_for(lambda s: s["inflight"] == 4, "A to hold four tasks", 10)
            deadline = time.monotonic() + 10
            while {r.task_id for r in read_runs(log)} != set(ids[:2]):
                assert time.monotonic() < deadline, f"A did not start E and L: {read_runs(log)}"
                time.sleep(0.05)
            host_b = deployment.start_workers(b, "b", 2)
            work = [("nap" if i % 2 else "nap_late", [str(log), 0.5]) for i in range(16)]
            outcome.add("queued", work, deployment.submit(work))
            outcome.pids = {"a": actor_pids(host_a), "b": actor_pids(host_b)}
            name_a = deployment.host_name("a")

            lan.cut(a)
            outcome.cut_at = time.time()
            watch_hosts(deployment, outcome, name_a, outcome.cut_at + CUT_S, {
                outcome.cut_at + 0.5: gate_early.touch,
                outcome.cut_at + 2.5: gate_late.touch})
            lan.heal(a)
            outcome.healed_at = time.time()

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stats = deployment.stats()
                if stats is not None and name_a in stats["hosts"] and stats["actors"] == 4:
                    outcome.rejoined_at = time.time()
                    break
                time.sleep(0.1)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and deployment.stats_now()["tasks"]:
                time.sleep(0.1)
            after = [("nap", [str(log), 0.2]) for _ in range(8)]
            outcome.add("after", after, deployment.submit(after))
            settle(deployment, outcome, 5)
            for role, process in (("a", host_a), ("b", host_b)):
                outcome.pids[role] |= actor_pids(process)
            outcome.a_survived = host_a.alive()
        finally:
            gate_early.touch()
            gate_late.touch()
            collect(outcome, deployment, log)
    print(f"\nnetwork cut of {CUT_S:.0f}s: {outcome.summary()}")
    for task_id in outcome.all_ids():
        print("  " + outcome.describe(task_id))
    yield outcome


def test_cut_no_early_ack_task_runs_twice(cut):
    twice = [cut.describe(i) for i in cut.all_ids()
             if cut.kind[i] in EARLY_ACK and len(cut.runs_of(i)) > 1]
    assert not twice, listing(f"{len(twice)} early-ack tasks ran more than once", twice)


def test_cut_every_task_runs_and_ends_success(cut):
    """Nothing accepted is lost: every id ran and ended SUCCESS (every body here returns)."""
    never = [cut.describe(i) for i in cut.all_ids() if not cut.runs_of(i)]
    assert not never, listing(f"{len(never)} tasks never ran", never)
    failed = [cut.describe(i) for i in cut.all_ids() if cut.states[i][0] != "SUCCESS"]
    assert not failed, listing(f"{len(failed)} tasks did not end SUCCESS", failed)


def test_cut_task_finished_on_the_cut_host_counts_as_success(cut):
    """E and L returned on A while it was cut off (their gates opened 0.5 s and 2.5 s into
    the cut): whatever the router concluded meanwhile, the final state is SUCCESS."""
    finished_on_a = sorted({r.task_id for r in cut.ended
                            if cut.host_of(r) == "a" and r.task_id in cut.ids["running"]})
    assert finished_on_a == sorted(cut.ids["running"]), "E and L did not both finish on A"
    wrong = [cut.describe(i) for i in finished_on_a if cut.states[i][0] != "SUCCESS"]
    assert not wrong, listing(f"{len(wrong)} tasks finished on the cut host are not SUCCESS",
                              wrong)


def test_cut_prefetched_tasks_never_started_on_the_cut_host_run_once_elsewhere(cut):
    """P1 and P2: a prefetched task that did not run on A is requeued when A is declared
    lost and runs once on B, without waiting for A to come back; one that A started while
    cut off does not run again (and ends SUCCESS)."""
    assert cut.lost_at is not None, "the router never declared A lost"
    problems = []
    for task_id in cut.ids["prefetched"]:
        where = [cut.host_of(r) for r in cut.runs_of(task_id)]
        if "a" in where:
            if where != ["a"] or cut.states[task_id][0] != "SUCCESS":
                problems.append(f"started on A during the cut: {cut.describe(task_id)}")
        # Not before the router can have declared A lost (``lost_at`` is when the test
        # saw it in the stats, a little later), and without waiting for the heal.
        elif where != ["b"] or not (cut.cut_at + HOST_TIMEOUT_S - HEARTBEAT_S - 0.5
                                    <= cut.runs_of(task_id)[0].started < cut.healed_at):
            problems.append(f"not run once on B between loss and heal: "
                            f"{cut.describe(task_id)}")
    assert not problems, listing(f"{len(problems)} of A's 2 prefetched tasks", problems)


def test_cut_acks_late_task_runs_twice_only_when_redelivered(cut):
    """At least once: an acks_late task may run again only as a redelivery of a run the
    router knew had started on the host it lost (L), never as a 'never started' requeue;
    the tasks on B, never interrupted, run once."""
    problems = []
    redelivered = 0
    for task_id in cut.all_ids():
        if cut.kind[task_id] in EARLY_ACK:
            continue
        runs = cut.runs_of(task_id)
        if len(runs) == 2:
            first, second = runs
            started_before_cut = cut.host_of(first) == "a" and first.started < cut.cut_at
            if started_before_cut and second.redelivered and cut.host_of(second) == "b":
                redelivered += 1
                continue
        if len(runs) != 1:
            problems.append(cut.describe(task_id))
    print(f"acks_late tasks redelivered after the host loss: {redelivered}")
    assert not problems, listing(f"{len(problems)} acks_late tasks ran again unasked", problems)


def test_cut_host_loss_is_declared_about_the_host_timeout_after_the_cut(cut):
    assert cut.lost_at is not None, "the router never declared A lost"
    detected_s = cut.lost_at - cut.cut_at
    print(f"host loss declared {detected_s:.2f}s after the cut (--host-timeout "
          f"{HOST_TIMEOUT_S})")
    assert HOST_TIMEOUT_S - HEARTBEAT_S - 0.5 <= detected_s \
        <= HOST_TIMEOUT_S + HOUSEKEEPING_S + 0.5


def test_cut_healed_host_rejoins_and_takes_tasks_again(cut):
    assert cut.rejoined_at is not None, "A's host and actors did not come back within 20 s"
    print(f"A rejoined {cut.rejoined_at - cut.healed_at:.2f}s after the heal")
    assert cut.a_survived, "A's zq workers exited"
    after = cut.ids["after"]
    assert [cut.states[i][0] for i in after] == ["SUCCESS"] * len(after)
    assert [len(cut.runs_of(i)) for i in after] == [1] * len(after)
    on_a = [i for i in after if cut.host_of(cut.runs_of(i)[0]) == "a"]
    assert on_a, "no task sent after the heal ran on A"
    assert "Traceback" not in cut.logs


# -- a blip: cut and healed before the host timeout ---------------------------------------


def test_short_cut_loses_nothing_runs_nothing_twice_and_declares_no_host_lost(tmp_path):
    log = tmp_path / "runs.log"
    outcome = Outcome()
    with Lan() as lan:
        a, b = lan.add_host("a"), lan.add_host("b")
        deployment = Deployment(lan, tmp_path)
        try:
            deployment.start()
            host_a = deployment.start_workers(a, "a", 2)
            host_b = deployment.start_workers(b, "b", 2)
            outcome.pids = {"a": actor_pids(host_a), "b": actor_pids(host_b)}
            name_a = deployment.host_name("a")
            work = [("nap" if i % 2 else "nap_late", [str(log), 0.4]) for i in range(32)]
            outcome.add("queued", work, deployment.submit(work))
            deadline = time.monotonic() + 10
            while len({r.pid for r in read_runs(log)} & outcome.pids["a"]) < 2:
                assert time.monotonic() < deadline, "A's actors did not start tasks"
                time.sleep(0.05)

            lan.cut(a)
            outcome.cut_at = time.time()
            watch_hosts(deployment, outcome, name_a, outcome.cut_at + BLIP_S, {})
            lan.heal(a)
            outcome.healed_at = time.time()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                stats = deployment.stats_now()
                outcome.hosts_seen.append((time.time(), len(stats["hosts"]), stats["actors"]))
                if name_a not in stats["hosts"] and outcome.lost_at is None:
                    outcome.lost_at = time.time()
                if stats["tasks"] == 0:
                    break
                time.sleep(0.1)
            settle(deployment, outcome, 3)
        finally:
            collect(outcome, deployment, log)
    print(f"\nnetwork cut of {BLIP_S:.0f}s: {outcome.summary()}")

    assert outcome.lost_at is None, "the router declared A lost after a short cut"
    assert min(actors for _, _, actors in outcome.hosts_seen) == 4
    assert "silent for" not in outcome.router_log
    table = {i: (outcome.states[i][0], len(outcome.runs_of(i))) for i in outcome.all_ids()}
    assert table == {i: ("SUCCESS", 1) for i in outcome.all_ids()}, "\n".join(
        outcome.describe(i) for i in outcome.all_ids() if table[i] != ("SUCCESS", 1))
    assert any(outcome.host_of(r) == "a" and r.started > outcome.healed_at
               for r in outcome.runs), "A took no task after the heal"


# -- short tasks stacked on the cut host ---------------------------------------------------


def test_cut_during_stacked_short_tasks_runs_no_early_ack_task_twice_and_loses_none(tmp_path):
    """Both hosts work through a stream of 5 ms early-ack tasks, so the router stacks them
    on every actor, granted to start without waiting for confirmations. A is cut for 6 s
    (host timeout 4 s): the router must count A's granted tasks as possibly started
    (presumed WorkerLostError), never run one of them again elsewhere, and replace each
    presumed failure with the real outcome A hands over after the heal. Every id ends
    SUCCESS, each ran exactly once, and those A never started ran on B."""
    log = tmp_path / "runs.log"
    outcome = Outcome()
    with Lan() as lan:
        a, b = lan.add_host("a"), lan.add_host("b")
        deployment = Deployment(lan, tmp_path)
        try:
            deployment.start()
            host_a = deployment.start_workers(a, "a", 2)
            host_b = deployment.start_workers(b, "b", 2)
            outcome.pids = {"a": actor_pids(host_a), "b": actor_pids(host_b)}
            name_a = deployment.host_name("a")
            warm = [("nap", [str(log), 0.005]) for _ in range(40)]
            outcome.add("warm", warm, deployment.submit(warm))
            deployment.wait_for(lambda s: s["tasks"] == 0, "the warm-up tasks", 20)
            stream = [("nap", [str(log), 0.005]) for _ in range(2000)]
            outcome.add("stream", stream, deployment.submit(stream))
            deadline = time.monotonic() + 10
            while sum(1 for r in read_runs(log) if r.pid in outcome.pids["a"]) < 100:
                assert time.monotonic() < deadline, "A's actors did not take stacked tasks"
                time.sleep(0.02)
            granted_before = deployment.stats_now()["granted"]

            lan.cut(a)
            outcome.cut_at = time.time()
            watch_hosts(deployment, outcome, name_a, outcome.cut_at + 6.0, {})
            lan.heal(a)
            outcome.healed_at = time.time()
            deployment.wait_for(lambda s: name_a in s["hosts"], "A to rejoin", 20)
            deployment.wait_for(lambda s: s["tasks"] == 0, "every task to end", 60)
            settle(deployment, outcome, 10)
        finally:
            collect(outcome, deployment, log)
    print(f"\nstacked tasks, network cut of 6s: {outcome.summary()}; "
          f"{granted_before} handed out stacked before the cut")

    assert granted_before > 100, "the router stacked no tasks: the scenario tests nothing"
    assert outcome.lost_at is not None, "the router never declared A lost"
    held = [int(line.rsplit("holding ", 1)[1].split()[0])
            for line in outcome.router_log.splitlines()
            if " lost (host " in line and "holding " in line]
    print(f"A's actors held {held} tasks when the router declared A lost")
    assert held and sum(held) > 0, "A's actors held nothing at the loss: nothing was judged"
    twice = [outcome.describe(i) for i in outcome.all_ids() if len(outcome.runs_of(i)) > 1]
    assert not twice, listing(f"{len(twice)} early-ack tasks ran more than once", twice)
    never = [outcome.describe(i) for i in outcome.all_ids() if not outcome.runs_of(i)]
    assert not never, listing(f"{len(never)} tasks never ran", never)
    failed = [outcome.describe(i) for i in outcome.all_ids()
              if outcome.states[i][0] != "SUCCESS"]
    assert not failed, listing(f"{len(failed)} tasks did not end SUCCESS", failed)
    assert "Traceback" not in outcome.logs
