"""zq.states.supersedes: which event may replace the stored state of a task."""

import pytest

from zq import states
from zq.states import FAILURE, PENDING, RETRY, REVOKED, SENT, STARTED, SUCCESS, supersedes


@pytest.mark.parametrize(("new", "old"), [
    (SENT, PENDING), (STARTED, SENT), ("PROGRESS", STARTED), ("PROGRESS", "PROGRESS"),
    (SUCCESS, "PROGRESS"), (SUCCESS, STARTED), (FAILURE, SENT), (RETRY, STARTED),
    (REVOKED, SENT), (SUCCESS, SENT),
])
def test_later_phase_of_the_same_attempt_wins(new, old):
    assert supersedes(new, 0, old, 0)


@pytest.mark.parametrize(("new", "old"), [
    (SENT, STARTED), (STARTED, "PROGRESS"), ("PROGRESS", RETRY), (PENDING, SENT),
])
def test_earlier_phase_arriving_late_loses(new, old):
    assert not supersedes(new, 0, old, 0)


@pytest.mark.parametrize("ready", sorted(states.READY_STATES))
@pytest.mark.parametrize("new", [SENT, STARTED, "PROGRESS", SUCCESS, FAILURE, RETRY])
def test_ready_state_is_final_for_its_attempt(ready, new):
    assert not supersedes(new, 1, ready, 1)


def test_a_later_attempt_replaces_a_ready_state():
    assert supersedes(STARTED, 2, FAILURE, 1)
    assert not supersedes(PENDING, 2, FAILURE, 1)


def test_a_later_attempt_wins_whatever_its_phase():
    assert supersedes(SENT, 1, RETRY, 0)
    assert supersedes(STARTED, 1, "PROGRESS", 0)


def test_an_earlier_attempt_loses():
    assert not supersedes(SUCCESS, 0, STARTED, 1)


def test_state_sets():
    # REJECTED is final here: a task that rejected its message for good.
    assert states.READY_STATES == {SUCCESS, FAILURE, REVOKED, states.REJECTED}
    assert states.PROPAGATE_STATES <= states.READY_STATES
    assert not states.READY_STATES & states.UNREADY_STATES
