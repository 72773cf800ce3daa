"""Validation where a message enters: each function says why a header (or a part of one)
cannot be taken, as one line for the sender, or returns None when it can."""

from __future__ import annotations

from typing import Any

from .ids import EVENT_TYPES, MAX_CHORD_SIZE, MAX_QUEUE_NAME, MAX_TASK_ID


def event_problem(event: Any) -> str | None:
    """Why a state event cannot be stored, or None when it can."""
    if not isinstance(event, dict):
        return "an event must be a map"
    if not isinstance(event.get("id"), str) or not event["id"] or len(event["id"]) > MAX_TASK_ID:
        return "an event needs a task id string of 1 to 255 characters"
    if not isinstance(event.get("state"), str) or not event["state"]:
        return "an event needs a state string"
    if not isinstance(event.get("retries", 0), int) or isinstance(event.get("retries"), bool):
        return "'retries' must be an integer"
    for key, kinds in (("ts", (int, float)), ("name", str), ("ct", str), ("body", bytes),
                       ("exc", dict), ("copy", str), ("runtime", (int, float)),
                       ("worker", str), ("queue", str), ("parent_id", str), ("root_id", str),
                       ("group_id", str), ("chord_id", str)):
        if key in event and not isinstance(event[key], kinds):
            return f"'{key}' has the wrong type"
    if "exc" in event and not all(isinstance(event["exc"].get(k, ""), str)
                                  for k in ("type", "module", "message")):
        return "'exc' needs string type, module and message"
    return None


def task_header_problem(h: dict[str, Any]) -> str | None:
    """Why a submitted task header cannot be taken, or None when it can."""
    if not isinstance(h.get("id"), str) or not h["id"] or len(h["id"]) > MAX_TASK_ID:
        return "a task needs an 'id' string of 1 to 255 characters"
    if not isinstance(h.get("task"), str) or not h["task"]:
        return "a task needs a 'task' name string"
    if not isinstance(h.get("ct"), str):
        return "a task needs a 'ct' content type string"
    for key in ("eta", "expires", "time_limit", "soft_time_limit"):
        if key in h and not isinstance(h[key], (int, float)):
            return f"'{key}' must be a number"
    for key in ("retries", "max_redeliveries", "redeliveries"):
        if key in h and (not isinstance(h[key], int) or h[key] < 0):
            return f"'{key}' must be a non-negative integer"
    if "priority" in h and (not isinstance(h["priority"], int) or not 0 <= h["priority"] <= 9):
        return "'priority' must be an integer from 0 to 9"
    if "queue" in h and not (isinstance(h["queue"], str)
                             and len(h["queue"]) <= MAX_QUEUE_NAME):
        return f"'queue' must be a string of at most {MAX_QUEUE_NAME} characters"
    if "copy_id" in h and not (isinstance(h["copy_id"], str) and len(h["copy_id"]) <= 511
                               and h["copy_id"].startswith(h["id"] + "\x1f")
                               and isinstance(h.get("queue"), str) and h["queue"]):
        return ("'copy_id' must be the task id, \\x1f and a queue name (at most 511 "
                "characters), with 'queue' set")
    return _chord_problem(h)


def _chord_problem(h: dict[str, Any]) -> str | None:
    """Why a task's chord fields cannot be taken: a part names its body and its place,
    a body how many parts it waits for."""
    if ("chord" in h) != ("chord_index" in h):
        return "'chord' and 'chord_index' go together: a chord part names its body and index"
    if "chord" in h and chord_part_problem([h["chord"], h["chord_index"]]) is not None:
        return (f"'chord' must be the chord body's task id (1 to {MAX_TASK_ID} characters) "
                f"and 'chord_index' a non-negative integer")
    if "chord_size" in h and not (_integer(h["chord_size"])
                                  and 1 <= h["chord_size"] <= MAX_CHORD_SIZE):
        return f"'chord_size' must be an integer from 1 to {MAX_CHORD_SIZE}"
    if "chord_chain" in h and chord_part_problem(h["chord_chain"]) is not None:
        return ("'chord_chain' must be [body id string of 1 to 255 characters, index "
                ">= 0]")
    if "relay" in h and not isinstance(h["relay"], bool):
        return "'relay' must be true or false"
    return None


def chord_part_problem(value: Any) -> str | None:
    """Why ``value`` is not a chord part as a DONE names one: [body task id, index]."""
    if (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and 0 < len(value[0]) <= MAX_TASK_ID and _integer(value[1]) and value[1] >= 0):
        return None
    return "a chord part is [body task id, index >= 0]"


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ready_problem(queues: Any, credit: Any, holding: Any) -> str | None:
    """Why an actor's READY cannot be taken, or None when it can."""
    # No queues at all is an actor that cancelled its last consumer: it takes nothing.
    if (isinstance(queues, list) and all(isinstance(q, str) for q in queues)
            and isinstance(credit, int) and not isinstance(credit, bool) and credit >= 0
            and isinstance(holding, list)
            and all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
                    and isinstance(x[1], int) for x in holding)):
        return None
    return ("READY needs 'queues' (a list of names), 'credit' (an integer >= 0) and "
            "'holding' (a list of [task id, retries])")


def registered_problem(names: Any) -> str | None:
    """Why a READY's optional ``registered`` (its app's task names) cannot be taken."""
    if isinstance(names, list) and len(names) <= 10_000 and all(
            isinstance(n, str) and 0 < len(n) <= MAX_TASK_ID for n in names):
        return None
    return "'registered' must be a list of at most 10000 task names"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _counts(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and _integer(v) and v >= 0 for k, v in value.items())


def _actor_facts_problem(facts: Any) -> str | None:
    if not isinstance(facts, dict):
        return "each actor's facts must be a map"
    for key in ("pid",):
        if not (_integer(facts.get(key)) and facts[key] >= 0):
            return f"an actor's '{key}' must be an integer >= 0"
    for key in ("started", "began"):
        if key in facts and not _number(facts[key]):
            return f"an actor's '{key}' must be a number"
    task = facts.get("task")
    if task is not None and not (isinstance(task, list) and len(task) == 2
                                 and isinstance(task[0], str) and _integer(task[1])):
        return "an actor's 'task' must be [task id, retries]"
    if "processed" in facts and not _counts(facts["processed"]):
        return "an actor's 'processed' must map task names to counts"
    if "rusage" in facts and not (isinstance(facts["rusage"], dict) and all(
            isinstance(k, str) and _number(v) for k, v in facts["rusage"].items())):
        return "an actor's 'rusage' must map names to numbers"
    return None


def pool_facts_problem(pool: Any) -> str | None:
    """Why a supervisor HEARTBEAT's optional ``pool`` (what ``inspect`` shows of its host
    and actors) cannot be taken, or None when it can."""
    if not isinstance(pool, dict):
        return "'pool' must be a map"
    for key in ("pid", "size", "prefetch"):
        if not (_integer(pool.get(key)) and pool[key] >= 0):
            return f"'pool.{key}' must be an integer >= 0"
    if not _number(pool.get("started")):
        return "'pool.started' must be a number"
    autoscale = pool.get("autoscale")
    if autoscale is not None and not (isinstance(autoscale, list) and len(autoscale) == 2
                                      and all(_integer(x) for x in autoscale)):
        return "'pool.autoscale' must be [max, min] or absent"
    if not isinstance(pool.get("conf", {}), dict):
        return "'pool.conf' must be a map"
    actors = pool.get("actors", {})
    if not isinstance(actors, dict) or not all(isinstance(k, str) for k in actors):
        return "'pool.actors' must map actor identities to their facts"
    for facts in actors.values():
        problem = _actor_facts_problem(facts)
        if problem is not None:
            return problem
    return None


def heartbeat_problem(header: dict[str, Any]) -> str | None:
    """Why a supervisor's HEARTBEAT cannot be taken (an actor's carries no ``actors``)."""
    host, actors = header.get("host"), header.get("actors")
    if (isinstance(host, str) and host and isinstance(actors, list)
            and all(isinstance(a, (str, bytes)) for a in actors)):
        return None
    return "a supervisor HEARTBEAT needs 'host' (a string) and 'actors' (a list)"


def identity(value: Any) -> bytes | None:
    """A peer identity as bytes (msgpack may bring it as text), or None."""
    if isinstance(value, str):
        return value.encode()
    return value if isinstance(value, bytes) else None


def event_types_problem(types: Any) -> str | None:
    """Why ``types`` is not a list of event types a receiver may ask for ("*": all)."""
    if (isinstance(types, list) and 0 < len(types) <= len(EVENT_TYPES) + 1
            and all(isinstance(t, str) and (t == "*" or t in EVENT_TYPES) for t in types)):
        return None
    return ("'types' must be a list of event types (task-sent, ..., worker-offline) or "
            "\"*\"")


def monitor_batch_problem(events: Any) -> str | None:
    """Why a batch of Celery-shaped events (from the router) cannot be published."""
    if isinstance(events, list) and all(
            isinstance(e, dict) and e.get("type") in EVENT_TYPES
            and isinstance(e.get("clock"), int) for e in events):
        return None
    return "'monitor' must be a list of events, each with a known 'type' and a 'clock'"
