"""Scenarios of Celery's own integration suite (t/integration/test_canvas.py), run on zq:
the same canvas, the same expected values. Each test names the Celery test it ports."""

from __future__ import annotations

import pytest

import zq
from tests.apps import basic
from tests.apps.basic import (
    add,
    add_replaced,
    add_to_all,
    fail,
    fail_replaced,
    identity,
    replace_with_chain,
    tsum,
)
from zq import chain, chord, group

app = basic.app

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 30


def test_complex_chain(cluster):
    g = group(add.s(i) for i in range(4))
    c = add.s(2, 2) | (add.s(4) | add_replaced.s(8) | add.s(16) | add.s(32)) | g
    assert c().get(timeout=TIMEOUT) == [64, 65, 66, 67]


def test_chain_of_chain_with_a_single_task(cluster):
    assert chain([chain(identity.s(42))]).apply_async().get(timeout=TIMEOUT) == 42


def test_chain_on_error(cluster):
    res = chain(add.s(1, 2), fail.s(), add.s(3, 4))()
    with pytest.raises(ValueError):
        res.get(propagate=True, timeout=TIMEOUT)
    with pytest.raises(ValueError):
        res.parent.get(propagate=True, timeout=TIMEOUT)


def test_chain_inside_group_receives_arguments(cluster):
    c = add.s(5, 6) | group((add.s(1) | add.s(2), add.s(3)))
    assert c().get(timeout=TIMEOUT) == [14, 14]


def test_group_result_not_has_cache(cluster):
    ct = chain(identity.si(5), group([identity.si(3), identity.si(4)]))
    result = group(identity.si(1), identity.si(2), ct).delay()
    assert result.get(timeout=TIMEOUT) == [1, 2, [3, 4]]


def test_chain_of_task_a_group_and_a_chord(cluster):
    c = add.si(1, 0) | group(add.s(1), add.s(1)) | group(tsum.s(), tsum.s()) | tsum.s()
    assert c().get(timeout=TIMEOUT) == 8


def test_chain_of_chords_as_groups_chained_to_a_task_with_two_tasks(cluster):
    c = add.si(1, 0) | group(add.s(1), add.s(1)) | tsum.s() | add.s(1)
    c = c | group(add.s(1), add.s(1)) | tsum.s()
    assert c().get(timeout=TIMEOUT) == 12


def test_chain_of_explicit_chords(cluster):
    c1 = chain(chord(group(add.si(1, 0), add.si(1, 0)), tsum.s()),
               chord(group(add.s(1), add.s(1)), tsum.s()),
               chord(group(add.s(0), add.s(0)), tsum.s()))
    c2 = chain(chord(group(add.s(10), add.s(10)), tsum.s()),
               chord(group(add.s(0), add.s(0)), tsum.s()),
               chord(group(add.s(1), add.s(1)), tsum.s()))
    assert (c1 | c2)().get(timeout=TIMEOUT) == 178


def test_chain_of_nine_chords(cluster):
    c = chain(chord(group(add.si(1, 0), add.si(1, 0), add.si(1, 0)), tsum.s()),
              *[chord(group(add.s(1), add.s(1), add.s(1)), tsum.s()) for _ in range(7)],
              chord(group(add.s(0), add.s(0), add.s(0)), tsum.s()))
    assert c().get(timeout=TIMEOUT) == 29520


def test_chain_of_a_chord_and_a_group_with_two_tasks(cluster):
    c = add.si(1, 0) | group(add.s(1), add.s(1)) | tsum.s() | add.s(1)
    c = c | group(add.s(1), add.s(1))
    assert c().get(timeout=TIMEOUT) == [6, 6]


def test_chain_of_a_chord_and_three_tasks_and_a_group(cluster):
    c = group(add.s(1, 1), add.s(1, 1)) | tsum.s() | add.s(1) | add.s(1) | add.s(1)
    c = c | group(add.s(1), add.s(1))
    assert c().get(timeout=TIMEOUT) == [8, 8]


def test_task_replaced_with_chain(cluster):
    assert replace_with_chain.s(42).delay().get(timeout=TIMEOUT) == 42


def test_chain_child_replaced_with_chain_middle(cluster):
    c = chain(identity.s(42), replace_with_chain.s(), identity.s())
    assert c.delay().get(timeout=TIMEOUT) == 42


def test_task_replace_with_group_preserves_group_order(cluster):
    # In Celery: a task replaced by a group returns the group's results, in order.
    result = basic.replaced_by.delay(group(identity.si(i) for i in range(5)))
    assert result.get(timeout=TIMEOUT) == [0, 1, 2, 3, 4]


def test_nested_group_group(cluster):
    sig = group(group(identity.s(42), identity.s(42)))
    assert sig.delay().get(timeout=TIMEOUT) == [42, 42]


def test_nested_group(cluster):
    c = group(add.si(1, 10), group(add.si(1, 100), group(add.si(1, 1000), add.si(1, 2000))))
    assert c().get(timeout=TIMEOUT) == [11, 101, 1001, 2001]


def test_nested_group_chord_counting_mixed(cluster):
    child_chord = chord((identity.si(42), chain((identity.si(42),) * 12),
                         group((identity.si(42),) * 12),
                         chord((identity.si(42),) * 12, identity.si(1337))), identity.s())
    res = group((child_chord,)).delay()
    assert res.get(timeout=TIMEOUT) == [[42, 42, *((42,) * 12), 1337]]


def test_chord_order(cluster):
    inputs = [i for i in range(10)]
    c = group(identity.si(i) for i in inputs)
    assert c.apply_async().get(timeout=TIMEOUT) == inputs
    assert chord(c, identity.s()).delay().get(timeout=TIMEOUT) == inputs


def test_replaced_nested_chord(cluster):
    c1 = chord([
        chord([add.s(1, 2), add_replaced.s(3, 4)], add_to_all.s(5)) | tsum.s(),
        chord([add_replaced.s(6, 7), add.s(0, 0)], add_to_all.s(8)) | tsum.s(),
    ], add_to_all.s(9))
    assert c1().get(timeout=TIMEOUT) == [29, 38]


def test_group_chain(cluster):
    c = add.s(2, 2) | group(add.s(i) for i in range(4)) | add_to_all.s(8)
    assert c().get(timeout=TIMEOUT) == [12, 13, 14, 15]


def test_single_task_header(cluster):
    assert chord([identity.si(42)], identity.s())().get(timeout=TIMEOUT) == [42]
    assert (group([identity.si(42)]) | identity.s())().get(timeout=TIMEOUT) == [42]


def test_nested_chord(cluster):
    c1 = chord([chord([add.s(1, 2), add.s(3, 4)], add.s([5])),
                chord([add.s(6, 7)], add.s([10]))], add_to_all.s(["A"]))
    assert c1().get(timeout=TIMEOUT) == [[3, 7, 5, "A"], [13, 10, "A"]]
    c2 = group([group([add.s(1, 2), add.s(3, 4)]) | add.s([5]),
                group([add.s(6, 7)]) | add.s([10])]) | add_to_all.s(["A"])
    assert c2().get(timeout=TIMEOUT) == [[3, 7, 5, "A"], [13, 10, "A"]]
    c = group([group([group([group([add.s(1, 2)]) | add.s([3])]) | add.s([4])])
               | add.s([5])]) | add.s([6])
    assert c().get(timeout=TIMEOUT) == [[[[3, 3], 4], 5], 6]


def test_chord_in_chords_with_chains(cluster):
    inner = chain(add.si(1, 2), chord(group([add.si(1, 2), add.si(1, 2)]), add.si(1, 2)))
    c = chord(group([inner, inner.clone()]), add.si(2, 2))
    assert c.delay().get(timeout=TIMEOUT) == 4


def test_chain_chord_chain_chord(cluster):
    c = chain(identity.si(1), chord([identity.si(2), chain(identity.si(3), chord(
        [identity.si(4), identity.si(5)], identity.si(6)))], identity.si(7)))
    assert c.delay().get(timeout=TIMEOUT) == 7


def test_chord_in_chain_with_args(cluster):
    # An expected failure in Celery (its issue #6176); zq passes the arguments on.
    c1 = chain(chord([identity.s(), identity.s()], identity.s()), identity.s())
    assert c1.apply_async(args=(1,)).get(timeout=TIMEOUT) == [1, 1]
    assert c1.apply(args=(1,)).get(timeout=TIMEOUT) == [1, 1]


def test_large_header(cluster):
    c = group(identity.si(i) for i in range(1000)) | tsum.s()
    assert c.delay().get(timeout=TIMEOUT) == 499500


def test_group_in_center_of_chain(cluster):
    t1 = chain(tsum.s(), group(add.s(8), add.s(16)), tsum.s() | add.s(32))
    t2 = chord([tsum, tsum], t1)
    t3 = chord([add.s(0, 1)], t2)
    assert t3.apply_async().get(timeout=TIMEOUT) == 60


def test_error_propagates_from_chord(cluster):
    sig = add.s(1, 1) | fail.s() | group(add.s(1), add.s(1))
    with pytest.raises(ValueError):
        sig.delay().get(timeout=TIMEOUT)


def test_error_propagates_to_chord_from_simple(cluster):
    child_sig = fail.s()
    chord_sig = chord((child_sig,), identity.s())
    with pytest.raises(zq.ChordError):
        chord_sig.delay().get(timeout=TIMEOUT)
    group_sig = group((chord_sig,))
    with pytest.raises(zq.ChordError):
        group_sig.delay().get(timeout=TIMEOUT)


def test_chord_header_task_replaced_with_chain(cluster):
    orig_sig = chord(replace_with_chain.si(42), identity.s())
    assert orig_sig.delay().get(timeout=TIMEOUT) == [42]


def test_chord_body_task_replaced_with_chain(cluster):
    orig_sig = chord(identity.s(42), replace_with_chain.s())
    assert orig_sig.delay().get(timeout=TIMEOUT) == [42]


def test_chord_body_chain_child_replaced_with_chain_middle(cluster):
    orig_sig = chord(identity.s(42), chain(identity.s(), replace_with_chain.s(),
                                           identity.s()))
    assert orig_sig.delay().get(timeout=TIMEOUT) == [42]


def test_replaced_task_that_fails_fails_its_chord(cluster):
    with pytest.raises(zq.ChordError, match="replaced and failed"):
        chord([fail_replaced.s(), identity.si(1)], identity.s()).delay().get(
            timeout=TIMEOUT)
