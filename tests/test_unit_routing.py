"""zq.routing: topic matching, the client's route resolution, the router's queues."""

import pytest

from zq import config
from zq.router.bindings import Bindings, topic_matches
from zq.router.book import Entry, TaskQueue
from zq.routing import Exchange, Queue, TaskRoutes


@pytest.mark.parametrize(("pattern", "key"), [
    ("*.stock.#", "usd.stock"),
    ("*.stock.#", "euro.stock.db"),
    ("*.stock.#", "euro.stock.db.more"),
    ("#", ""),
    ("#", "a.b.c"),
    ("a.#.c", "a.c"),
    ("a.#.c", "a.b.b.c"),
    ("a.*", "a.b"),
    ("exact.key", "exact.key"),
])
def test_topic_matches(pattern, key):
    assert topic_matches(pattern, key)


@pytest.mark.parametrize(("pattern", "key"), [
    ("*.stock.#", "stock.nasdaq"),
    ("*.stock.#", "usd.bonds"),
    ("a.*", "a"),
    ("a.*", "a.b.c"),
    ("a.#.c", "a.b.d"),
    ("exact.key", "exact.key.more"),
])
def test_topic_does_not_match(pattern, key):
    assert not topic_matches(pattern, key)


def router(**settings):
    return TaskRoutes(config.from_mapping(settings))


def test_default_queue():
    assert router().route("t", None).queue == "celery"
    assert router(task_default_queue="main").route("t", None).queue == "main"


def test_explicit_queue_beats_task_routes():
    routes = router(task_routes={"t": "routed"})
    assert routes.route("t", None).queue == "routed"
    assert routes.route("t", None, queue="explicit").queue == "explicit"


def test_task_routes_glob_and_function():
    assert router(task_routes={"video.*": "video"}).route("video.encode", None).queue == "video"
    route = router(task_routes=lambda name, *a, **kw: "fn" if name == "x" else None)
    assert route.route("x", None).queue == "fn"
    assert route.route("y", None).queue == "celery"


@pytest.mark.parametrize("priority", [-1, 10, "high"])
def test_bad_priority_is_refused(priority):
    with pytest.raises(ValueError, match="priority"):
        router().route("t", None, priority=priority)


def entry(task_id, priority=0):
    return Entry({"id": task_id, "task": "t", "ct": "x", "priority": priority}, None, b"")


def test_queue_serves_priority_zero_first_and_fifo_within_a_level():
    queue = TaskQueue("q")
    for task_id, priority in [("a", 5), ("b", 0), ("c", 5), ("d", 0)]:
        queue.push(entry(task_id, priority))
    assert [queue.pop().id for _ in range(4)] == ["b", "d", "a", "c"]
    assert queue.pop() is None


def test_discarded_entry_is_skipped():
    queue = TaskQueue("q")
    first, second = entry("a"), entry("b")
    queue.push(first)
    queue.push(second)
    queue.discard(first)
    assert queue.size == 1
    assert queue.pop() is second


def bindings(*queues):
    found = Bindings()
    found.declare([q.declaration() for q in queues])
    return found


def test_default_exchange_routes_a_key_to_the_queue_of_that_name():
    assert Bindings().route("", "video") == ["video"]
    assert Bindings().route("", None) == []


def test_fanout_routes_to_every_bound_queue_whatever_the_key():
    everyone = Exchange("everyone", "fanout")
    found = bindings(Queue("a", everyone), Queue("b", everyone), Queue("a", everyone))
    assert found.route("everyone", None) == ["a", "b"]
    assert found.route("everyone", "any.key") == ["a", "b"]


def test_direct_routes_to_every_queue_bound_with_the_key():
    jobs = Exchange("jobs")
    found = bindings(Queue("a", jobs, "k"), Queue("b", jobs, "k"), Queue("c", jobs, "other"))
    assert found.route("jobs", "k") == ["a", "b"]
    assert found.route("jobs", "none") == []
    assert found.route("jobs", None) == []


def test_topic_routes_to_each_matching_queue_once():
    media = Exchange("media", "topic")
    found = bindings(Queue("video", media, "video.#"), Queue("all", media, "#"),
                     Queue("video", media, "*.hd"))
    assert found.route("media", "video.hd") == ["video", "all"]
    assert found.route("media", "image.png") == ["all"]


def test_an_unknown_exchange_routes_nowhere():
    assert bindings().route("nowhere", "k") == []


def test_an_exchange_keeps_its_first_type():
    found = bindings(Queue("a", Exchange("x", "fanout")))
    with pytest.raises(ValueError, match="declared as fanout"):
        found.declare([Queue("b", Exchange("x", "topic"), "#").declaration()])


def test_a_copy_is_tracked_apart_from_its_task():
    header = {"id": "t1", "task": "n", "queue": "a", "copy_id": "t1\x1fa"}
    assert Entry(header, None, b"").key == ("t1\x1fa", 0)
    assert Entry({"id": "t1", "task": "n"}, None, b"").key == ("t1", 0)


def test_recent_keys_remember_between_two_and_three_generations():
    from zq.router import RecentKeys

    recent = RecentKeys(100)
    for key in range(1000):
        recent.add(key)
        assert key in recent
    remembered = [key for key in range(1000) if key in recent]
    assert remembered == list(range(1000 - len(remembered), 1000))
    assert 200 <= len(recent) == len(remembered) <= 300
