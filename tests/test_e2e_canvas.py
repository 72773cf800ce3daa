"""Issue 10 end to end: Celery's canvas (signatures, chains, groups, map) on real processes.

Each shape runs remotely on the shared cluster and eagerly (``apply``); chords, callbacks
and replace have their own file, tests/test_e2e_chords.py.
"""

from __future__ import annotations

import json

import pytest

import zq
from tests.apps import basic
from tests.apps.basic import (
    Counter,
    add,
    echo,
    fail,
    lineage,
    make_signature,
    reject_for_good,
    run_signature,
    wait_for_file,
    wait_inside,
    xsum,
)
from zq import GroupResult, ResultSet, chain, chord, group, states

app = basic.app


# -- signatures ---------------------------------------------------------------------------


def test_a_partial_gets_the_new_arguments_first(cluster):
    partial = add.s(2)
    assert partial.delay(4).get(timeout=10) == 6
    assert echo.s().apply_async(("x",)).get(timeout=10) == "x"


def test_an_immutable_signature_takes_no_new_arguments(cluster):
    assert add.si(1, 1).apply_async((100,)).get(timeout=10) == 2


def test_a_frozen_signature_has_its_id_before_it_is_sent(cluster):
    sig = add.s(3, 4)
    frozen = sig.freeze()
    result = sig.delay()
    assert result.id == frozen.id == sig.id
    assert frozen.get(timeout=10) == 7


def test_a_signature_travels_as_an_argument_and_a_return_value(cluster):
    assert run_signature.delay(add.s(20, 22)).get(timeout=10) == 42
    returned = make_signature.delay(5, 6).get(timeout=10)
    assert zq.signature(returned, app=app).delay().get(timeout=10) == 11


def test_a_signature_rebuilt_from_json_sends_as_before(cluster):
    sig = zq.signature(json.loads(json.dumps(add.s(1, 2).set(countdown=0))), app=app)
    assert sig.delay().get(timeout=10) == 3


def test_link_and_link_error_travel_with_the_task(cluster):
    sig = add.s(1, 2)
    sig.link(echo.s())
    sig.link_error(echo.si("failed"))
    assert sig.delay().get(timeout=10) == 3
    assert add.apply_async((1, 1), link_error=echo.si("x")).get(timeout=10) == 2


# -- chains -------------------------------------------------------------------------------


def test_a_chain_of_chains_flattens_and_runs_in_order(cluster):
    workflow = chain(add.s(1, 1) | add.s(1), chain(add.s(1), add.s(1)))
    assert len(workflow.tasks) == 4
    assert workflow.delay().get(timeout=10) == 5
    assert workflow().get(timeout=10) == 5


def test_a_chain_gives_every_link_the_root_and_its_parent(cluster):
    result = (lineage.s() | lineage.s() | lineage.si()).delay()
    last = result.get(timeout=10)
    middle = result.parent.get(timeout=10)
    first = result.parent.parent.get(timeout=10)
    assert result.parent.parent.parent is None
    assert first["root_id"] == first["id"] and first["parent_id"] is None
    assert middle["root_id"] == first["id"] and middle["parent_id"] == first["id"]
    assert last["root_id"] == first["id"] and last["parent_id"] == middle["id"]
    assert last["args"] == [] and middle["args"][0] == first
    assert result.parent.children == [result]
    assert [value for _, value in result.parent.parent.collect()] == [first, middle, last]


def test_a_failure_stops_the_chain(cluster, tmp_path):
    marker = tmp_path / "ran"
    result = (add.s(1, 1) | fail.si("no") | basic.touch.si(str(marker))).delay()
    with pytest.raises(ValueError, match="no"):
        result.get(timeout=10)
    with pytest.raises(ValueError, match="no"):
        result.parent.get(timeout=10)
    assert result.parent.failed()
    assert result.parent.parent.get(timeout=10) == 2
    assert not marker.exists()


def test_a_group_inside_a_chain_is_a_chord(cluster):
    workflow = add.s(1, 1) | group(add.s(1), add.s(2)) | xsum.s()
    assert workflow.delay().get(timeout=10) == 7
    assert isinstance((group(add.s(1, 1)) | xsum.s()), chord)


def test_chain_eagerly_with_root_and_parent(cluster):
    result = (lineage.s() | lineage.s()).apply()
    first, second = result.parent.get(), result.get()
    assert second["parent_id"] == first["id"] and second["root_id"] == first["id"]


# -- groups -------------------------------------------------------------------------------


def test_a_group_of_chains_and_groups(cluster):
    result = group(add.s(1, 1), add.s(1, 1) | add.s(1), group(add.s(2, 2), add.s(3, 3)))()
    assert result.get(timeout=10) == [2, 3, 4, 6]  # the inner group unrolled, as in Celery
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 4


def test_an_empty_group_is_ready_at_once(cluster):
    result = group([]).apply_async()
    assert result.get(timeout=1) == [] and result.ready() and len(result) == 0


def test_a_group_from_a_generator_with_partial_arguments(cluster):
    result = group(add.s(i) for i in range(5)).apply_async((10,))
    assert result.join(timeout=10) == [10 + i for i in range(5)]


def test_group_members_know_their_group(cluster):
    result = group(lineage.s(), lineage.s()).delay()
    assert {value["group"] for value in result.get(timeout=10)} == {result.id}


def test_a_failing_member_fails_the_group(cluster):
    result = group(add.s(1, 1), fail.s("bad")).delay()
    with pytest.raises(ValueError, match="bad"):
        result.get(timeout=10)
    assert result.get(timeout=10, propagate=False)[0] == 2
    assert result.failed() and not result.successful() and result.completed_count() == 1


def test_a_saved_group_result_is_restored_by_its_id(cluster):
    result = group(add.s(1, 2), group(add.s(3, 4))).delay()
    result.save()
    restored = GroupResult.restore(result.id, app=app)
    assert restored == result
    assert restored.get(timeout=10) == [3, 7]
    assert GroupResult.restore("no-such-group", app=app) is None


def test_a_result_set_and_revoking_a_group(cluster, gate):
    waiting = group(wait_for_file.s(str(gate)) for _ in range(3)).delay()
    waiting.revoke()
    gate.touch()
    results = ResultSet([add.delay(1, 1), add.delay(2, 2)])
    assert results.get(timeout=10) == [2, 4]
    with pytest.raises(zq.TaskRevokedError):
        waiting.get(timeout=10)


def test_group_eagerly(cluster):
    assert group(add.s(1, 1), add.s(1, 1) | add.s(5)).apply().get() == [2, 7]


# -- chord: eagerly (remote chords: tests/test_e2e_chords.py) ------------------------------


def test_a_chord_runs_eagerly(cluster):
    workflow = chord([add.s(i, i) for i in range(4)], xsum.s())
    assert workflow.apply().get() == 12


# -- map, starmap, chunks -----------------------------------------------------------------


def test_map_starmap_and_chunks_run_on_the_worker(cluster):
    assert echo.map([1, 2, 3]).delay().get(timeout=10) == [1, 2, 3]
    assert add.starmap(zip(range(3), range(3))).delay().get(timeout=10) == [0, 2, 4]
    assert add.chunks(zip(range(5), range(5)), 2)().get(timeout=10) == [[0, 2], [4, 6], [8]]
    assert add.chunks(zip(range(3), range(3)), 2).apply().get() == [[0, 2], [4]]


# -- waiting inside a task ----------------------------------------------------------------


def test_get_inside_a_task_is_refused_unless_allowed(cluster):
    with pytest.raises(RuntimeError, match="Never call result.get"):
        wait_inside.delay().get(timeout=10)
    assert wait_inside.delay(allow=True).get(timeout=10) == 2


# -- the small fixes ----------------------------------------------------------------------


def test_get_of_an_ignored_result_returns_none_at_once(cluster):
    assert add.apply_async((1, 2), ignore_result=True).get(timeout=0.1) is None


def test_a_rejected_task_is_final_and_get_raises(cluster):
    result = reject_for_good.delay()
    with pytest.raises(zq.Reject, match="not for me"):
        result.get(timeout=10)
    assert result.state == states.REJECTED


def test_a_task_whose_init_skips_the_base_class_runs(cluster):
    assert Counter().delay(5).get(timeout=10) == 15
    assert Counter().apply((1,)).get() == 11


def test_a_queued_task_reads_pending_unless_sent_is_tracked(cluster):
    result = add.apply_async((1, 1), countdown=30)
    assert result.state == states.PENDING
    app.conf.task_track_sent = True
    try:
        assert app.AsyncResult(result.id).state == states.SENT
    finally:
        app.conf.task_track_sent = False
        result.revoke()
