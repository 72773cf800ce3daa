"""Signatures as data: Celery's merging rules, serialization, and the canvas shapes."""

from __future__ import annotations

import json
import pickle

import pytest

import zq
from zq import App, chain, chord, chunks, group, serialization, signature, xmap


@pytest.fixture
def app():
    app = App("canvas", router="ipc:///nonexistent/zq-unit-canvas.sock")

    @app.task(name="canvas.add")
    def add(x, y):
        return x + y

    @app.task(name="canvas.xsum")
    def xsum(values):
        return sum(values)

    @app.task(bind=True, name="canvas.ids")
    def ids(self, *args):
        return [self.request.id, self.request.root_id, self.request.parent_id]

    return app


def test_partial_arguments_go_first_and_keyword_arguments_merge(app):
    add = app.tasks["canvas.add"]
    sig = add.s(2, y=1)
    clone = sig.clone((4,), {"y": 5, "z": 6}, countdown=3)
    assert clone.args == (4, 2) and clone.kwargs == {"y": 5, "z": 6}
    assert clone.options == {"countdown": 3}
    assert sig.args == (2,) and sig.kwargs == {"y": 1} and sig.options == {}


def test_an_immutable_signature_keeps_its_arguments_and_takes_options(app):
    sig = app.tasks["canvas.add"].si(1, 2)
    clone = sig.clone((9,), {"y": 9}, queue="q")
    assert clone.args == (1, 2) and clone.kwargs == {} and clone.options == {"queue": "q"}
    assert clone.immutable


def test_set_freeze_link_and_on_error_keep_options(app):
    add = app.tasks["canvas.add"]
    sig = add.s(1, 1).set(queue="q", immutable=True)
    callback, errback = add.s(1), add.si(0, 0)
    assert sig.link(callback) is callback and sig.link_error(errback) is errback
    assert sig.on_error(errback) is sig
    result = sig.freeze()
    assert result.id == sig.id == sig.options["task_id"]
    assert sig.options["link"] == [callback] and len(sig.options["link_error"]) == 2
    assert sig.immutable


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_every_canvas_shape_is_a_dict_that_travels_and_comes_back(app, serializer):
    add, xsum = app.tasks["canvas.add"], app.tasks["canvas.xsum"]
    shapes = [add.s(1, 2), add.si(1, 2).set(countdown=1), add.s(1) | add.s(2),
              group(add.s(1, 1), add.s(2) | add.s(3)), chord([add.s(1, 1)], xsum.s()),
              add.map([1, 2]), add.starmap([(1, 2)]), add.chunks([(1, 2)], 1)]
    for shape in shapes:
        assert isinstance(shape, dict)
        if serializer == "pickle":
            back = pickle.loads(pickle.dumps(shape))
        else:
            ct, body = serialization.dumps(shape, serializer)
            back = signature(serialization.loads(body, ct, {ct}), app=app)
        assert type(back) is type(shape)
        assert json.loads(json.dumps(back)) == json.loads(json.dumps(shape))


def test_or_builds_chains_and_chords_as_celery_does(app):
    add, xsum = app.tasks["canvas.add"], app.tasks["canvas.xsum"]
    assert isinstance(add.s(1) | add.s(2), chain)
    nested = (add.s(1) | add.s(2)) | (add.s(3) | add.s(4))
    assert [t.args for t in nested.tasks] == [(1,), (2,), (3,), (4,)]
    assert isinstance(group(add.s(1, 1)) | xsum.s(), chord)
    implicit = add.s(1, 1) | group(add.s(1), add.s(2)) | xsum.s()
    assert [type(t) for t in implicit.tasks] == [zq.Signature, chord]


def test_groups_take_generators_lists_and_nothing(app):
    add = app.tasks["canvas.add"]
    assert len(group(add.s(i, i) for i in range(3))) == 3
    assert len(group([add.s(1, 1)])) == 1
    assert group([]).apply().get() == []
    assert [t.args for t in group(add.s(1), add.s(2))] == [(1,), (2,)]


def test_eager_shapes_give_celery_s_values_and_ids(app):
    add, xsum, ids = (app.tasks[n] for n in ("canvas.add", "canvas.xsum", "canvas.ids"))
    assert (add.s(1, 1) | add.s(2) | add.si(5, 5)).apply().get() == 10
    result = (ids.s() | ids.si() | ids.si()).apply()
    first, second, third = result.parent.parent.get(), result.parent.get(), result.get()
    assert first[1] == first[0] and first[2] is None
    assert second[1:] == [first[0], first[0]] and third[1:] == [first[0], second[0]]
    # A group inside a group is unrolled into it, as in Celery.
    assert group(add.s(1), add.s(2) | add.s(3), group(add.s(4))).apply((1,)).get() \
        == [2, 6, 5]
    assert chord([add.s(i, i) for i in range(3)], xsum.s()).apply().get() == 6
    assert (group(add.s(1, 1), add.s(2, 2)) | xsum.s()).apply().get() == 6
    assert add.map([]).apply().get() == []
    assert chunks(add.s(), [(1, 1), (2, 2), (3, 3)], 2).apply().get() == [[2, 4], [6]]
    assert xmap(app.tasks["canvas.xsum"].s(), [[1, 2], [3]]).apply().get() == [3, 3]


def test_a_signature_call_runs_the_function_here(app):
    assert app.tasks["canvas.add"].s(2)(3) == 5


def test_a_group_inside_a_group_is_unrolled_and_a_task_is_a_signature(app):
    add, xsum = app.tasks["canvas.add"], app.tasks["canvas.xsum"]
    nested = group(add.s(1, 1), group(add.s(2), add.s(3)).clone((10,)))
    assert [(t.task, t.args) for t in nested] == [
        ("canvas.add", (1, 1)), ("canvas.add", (10, 2)), ("canvas.add", (10, 3))]
    assert [t.task for t in group([xsum, xsum])] == ["canvas.xsum", "canvas.xsum"]


def test_soft_time_limit_past_the_hard_one_is_refused(app):
    with pytest.raises(ValueError, match="soft_time_limit"):
        @app.task(soft_time_limit=10, time_limit=5)
        def slow():
            pass
    with pytest.raises(ValueError, match="soft_time_limit"):
        app.task_message("canvas.add", (1, 1), soft_time_limit=10, time_limit=5)


def test_register_task_binds_the_instance_it_is_given(app):
    class Double(zq.Task):
        name = "canvas.double"

        def __init__(self):
            self.factor = 2

        def run(self, x):
            return x * self.factor

    instance = Double()
    assert app.register_task(instance) is instance
    assert instance.app is app and app.tasks["canvas.double"] is instance
    assert instance.apply((4,)).get() == 8
    assert instance.s(3).apply().get() == 6


def test_replace_gives_a_copy_with_fields_replaced_not_merged(app):
    add = app.tasks["canvas.add"]
    sig = add.s(1, 2).set(countdown=5)
    new = sig.replace(args=(3,), options={"queue": "q"})
    assert (new.args, new.options) == ((3,), {"queue": "q"})
    assert (sig.args, sig.options) == ((1, 2), {"countdown": 5})
    assert sig.replace(kwargs={"y": 1}).kwargs == {"y": 1}
