"""Task state names, the sets they fall in, and the order in which they may replace each other."""

from __future__ import annotations

PENDING = "PENDING"
SENT = "SENT"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
RETRY = "RETRY"
REJECTED = "REJECTED"

# REJECTED is recorded only for a task that rejected its message for good (Reject with
# requeue=False, or without acks_late): final here, where Celery leaves it unready and a
# get() on it waits forever.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, REJECTED})
UNREADY_STATES = frozenset({PENDING, SENT, RECEIVED, STARTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED, REJECTED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED, REJECTED})
ALL_STATES = READY_STATES | UNREADY_STATES

# Within one attempt (one value of request.retries) a task moves through these phases.
# Custom states (PROGRESS, ...) sit between STARTED and RETRY and may repeat.
_PHASES = {PENDING: 0, SENT: 1, RECEIVED: 2, STARTED: 3, RETRY: 5,
           SUCCESS: 6, FAILURE: 6, REVOKED: 6, REJECTED: 6}
_CUSTOM_PHASE = 4


def phase(state: str) -> int:
    """The place of ``state`` within one attempt; custom states share one phase."""
    return _PHASES.get(state, _CUSTOM_PHASE)


def supersedes(new_state: str, new_retries: int, old_state: str, old_retries: int) -> bool:
    """Whether an event may replace the stored state.

    Events reach the results actor from the router and from actor processes over different
    sockets, so they can arrive out of order. An event wins when it belongs to a later attempt,
    or to the same attempt and a phase not earlier than the stored one; a ready state is final
    for its attempt.
    """
    if old_state in READY_STATES:
        return new_retries > old_retries and new_state != PENDING
    return (new_retries, phase(new_state)) >= (old_retries, phase(old_state))
