"""Chords counted by the router, link and link_error callbacks, and ``self.replace``, on
real processes: every shape remotely and, where Celery has it, eagerly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import zq
from tests.apps import basic
from tests.apps.basic import (
    add,
    echo,
    errback_with_id,
    errback_with_request,
    fail,
    lineage,
    mark,
    quiet_add,
    replaced_by,
    retry_once,
    slow_add,
    xsum,
)
from zq import chain, chord, group, states

app = basic.app

pytestmark = pytest.mark.timeout(60)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.02)


# -- chords -------------------------------------------------------------------------------


def test_a_chord_gets_its_header_results_in_header_order(cluster):
    # The first header task finishes last: the body still gets the results in order.
    header = [slow_add.s(i, i, 0.3 if i == 0 else 0.0) for i in range(5)]
    result = chord(header)(echo.s())
    assert result.get(timeout=20) == [0, 2, 4, 6, 8]
    assert [r.get(timeout=5) for r in result.parent.results] == [0, 2, 4, 6, 8]
    assert chord(header, xsum.s()).delay().get(timeout=20) == 20
    assert (group(header) | xsum.s()).apply_async().get(timeout=20) == 20


def test_a_chord_with_an_empty_header_calls_its_body_with_an_empty_list(cluster):
    assert chord([], echo.s()).delay().get(timeout=10) == []


def test_the_body_of_a_failed_chord_never_runs_and_its_errback_runs_once(cluster, tmp_path):
    ran, errors = tmp_path / "ran", tmp_path / "errors"
    failing = fail.s("header broke")
    failing_id = failing.freeze().id
    body = mark.s(path=str(ran))
    body.link_error(errback_with_request.s(str(errors)))
    result = chord([add.s(1, 1), failing, slow_add.s(1, 1, 0.3)], body).delay()
    with pytest.raises(zq.ChordError, match=f"Dependency {failing_id} raised"):
        result.get(timeout=20)
    assert result.state == states.FAILURE
    wait_for(lambda: lines(errors), timeout=10)
    [line] = lines(errors)
    assert line.startswith(f"{result.id} ChordError")
    slow_add.delay(0, 0, 0.5).get(timeout=10)  # the late header task has ended by now
    assert not ran.exists() and lines(errors) == [line]


def test_a_chord_of_chains_and_a_chord_in_a_chain(cluster):
    header = [add.s(1, 1) | add.s(10), add.s(2, 2) | add.s(20)]
    assert chord(header, xsum.s()).delay().get(timeout=20) == 36
    workflow = add.s(1, 1) | group(add.s(1), add.s(2)) | xsum.s() | add.s(100)
    result = workflow.delay()
    assert result.get(timeout=20) == 107
    assert result.parent.get(timeout=5) == 7


def test_nested_chords_and_a_group_inside_a_header(cluster):
    inner = chord([add.s(1, 1), add.s(2, 2)], xsum.s())
    assert chord([inner, add.s(10, 10)], echo.s()).delay().get(timeout=20) == [6, 20]
    # A group inside a header is unrolled into it, as in Celery.
    nested = chord([group(add.s(1, 1), add.s(2, 2)), add.s(3, 3)], echo.s())
    assert nested.delay().get(timeout=20) == [2, 4, 6]


def test_a_failure_inside_a_chain_in_the_header_fails_the_chord(cluster):
    header = [fail.s("first link") | add.s(1), add.s(1, 1)]
    with pytest.raises(zq.ChordError, match="first link"):
        chord(header, xsum.s()).delay().get(timeout=20)


def test_a_chord_whose_body_is_a_chain(cluster):
    result = chord([add.s(1, 1), add.s(2, 2)], xsum.s() | add.s(1)).delay()
    assert result.get(timeout=20) == 7


def test_a_header_task_that_retries_or_ignores_its_result_still_counts(cluster, tmp_path):
    header = [retry_once.s(5, str(tmp_path / "retried")), quiet_add.s(2, 3)]
    assert chord(header, echo.s()).delay().get(timeout=20) == [5, 5]


def test_root_and_parent_ids_through_a_chord(cluster):
    result = chord([lineage.s(), lineage.s()], lineage.s()).delay()
    body = result.get(timeout=20)
    parts = body["args"][0]
    assert {p["root_id"] for p in parts} == {body["root_id"]} == {parts[0]["id"]}
    assert {p["group"] for p in parts} == {result.parent.id}


def test_a_chord_of_a_thousand_header_tasks(cluster):
    result = chord([add.s(i, i) for i in range(1000)], xsum.s()).delay()
    assert result.get(timeout=60) == sum(2 * i for i in range(1000))


# -- link and link_error ------------------------------------------------------------------


def test_a_link_gets_the_result_and_an_immutable_one_does_not(cluster, tmp_path):
    path = tmp_path / "links"
    add.apply_async((1, 2), link=mark.s(path=str(path))).get(timeout=10)
    add.apply_async((1, 2), link=mark.si("fixed", str(path))).get(timeout=10)
    wait_for(lambda: len(lines(path)) == 2, timeout=10)
    assert sorted(lines(path)) == ["'fixed'", "3"]


def test_errbacks_in_both_forms_get_what_celery_gives_them(cluster, tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    result = fail.apply_async(("boom",), link_error=[
        errback_with_request.s(str(new)), errback_with_id.s(path=str(old))])
    with pytest.raises(ValueError):
        result.get(timeout=10)
    wait_for(lambda: lines(new) and lines(old), timeout=10)
    assert lines(new) == [f"{result.id} ValueError boom"]
    assert lines(old) == [result.id]


def test_a_chains_link_error_is_called_once_for_the_failing_link(cluster, tmp_path):
    errors, links = tmp_path / "errors", tmp_path / "links"
    workflow = chain(add.s(1, 1), fail.si("middle"), add.s(1))
    workflow.link_error(errback_with_request.s(str(errors)))
    workflow.link(mark.s(path=str(links)))
    result = workflow.delay()
    with pytest.raises(ValueError, match="middle"):
        result.get(timeout=10)
    wait_for(lambda: lines(errors), timeout=10)
    assert lines(errors) == [f"{result.parent.id} ValueError middle"]
    assert not links.exists()


def test_a_group_link_and_a_chord_link(cluster, tmp_path):
    path = tmp_path / "links"
    chord([add.s(1, 1)], xsum.s()).apply_async(link=mark.s(path=str(path))).get(timeout=10)
    wait_for(lambda: lines(path) == ["2"], timeout=10)


def test_links_run_eagerly_too(cluster, tmp_path):
    path, errors = tmp_path / "links", tmp_path / "errors"
    assert add.apply((2, 2), link=mark.s(path=str(path))).get() == 4
    assert lines(path) == ["4"]
    fail.apply(("eager",), link_error=errback_with_request.s(str(errors)))
    assert lines(errors)[0].endswith("ValueError eager")


# -- replace ------------------------------------------------------------------------------


def test_a_replaced_task_has_its_replacements_result(cluster):
    assert replaced_by.delay(add.s(20, 22)).get(timeout=10) == 42
    assert replaced_by.delay(add.s(1, 1) | add.s(1)).get(timeout=10) == 3
    assert replaced_by.delay(group(add.s(1, 1), add.s(2, 2))).get(timeout=10) == [2, 4]
    with pytest.raises(ValueError, match="replacement failed"):
        replaced_by.delay(fail.s("replacement failed")).get(timeout=10)


def test_replace_in_a_chain_and_in_a_chords_header(cluster, tmp_path):
    path = tmp_path / "after"
    workflow = add.s(1, 1) | replaced_by.si(add.s(10, 10)) | add.s(1)
    assert workflow.delay().get(timeout=10) == 21
    header = [replaced_by.s(add.s(1, 1)), add.s(2, 2)]
    assert chord(header, xsum.s()).delay().get(timeout=20) == 6
    replaced_by.apply_async((add.s(3, 3),), link=mark.s(path=str(path))).get(timeout=10)
    wait_for(lambda: lines(path) == ["6"], timeout=10)


def test_replace_eagerly_returns_the_replacements_value(cluster):
    assert replaced_by.apply((add.s(5, 5),)).get() == 10
