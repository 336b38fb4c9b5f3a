"""Outcome → the message's fate, and applying it: delete (batched), retry soon, release, or leave.

outcome            fate
done               delete   planned steps finished, or the deadline passed
no_action          delete   the policy asks nothing for this notice
ignored            delete   a kind spotq does not handle
test_notification  delete   Auto Scaling's test message
malformed          delete   can never be parsed; body excerpt logged
failed             delete   a permanent error (e.g. the lifecycle action is gone)
unknown_instance   delete or release (SPOTQ_QUEUE__UNKNOWN_INSTANCE_FATE)
out_of_scope       delete or release (SPOTQ_QUEUE__UNKNOWN_INSTANCE_FATE)
transient          retry    visibility set to SPOTQ_QUEUE__RETRY_DELAY_SECONDS; a DLQ ends endless retries
dry_run            leave    nothing done, nothing deleted: the message comes back when visibility lapses
"""

from __future__ import annotations

import enum
from typing import Literal

from spotq.observability import metrics


class Outcome(enum.StrEnum):
    DONE = "done"
    NO_ACTION = "no_action"
    IGNORED = "ignored"
    TEST_NOTIFICATION = "test_notification"
    MALFORMED = "malformed"
    FAILED = "failed"
    UNKNOWN_INSTANCE = "unknown_instance"
    OUT_OF_SCOPE = "out_of_scope"
    TRANSIENT = "transient"
    DRY_RUN = "dry_run"


class Fate(enum.StrEnum):
    DELETE = "delete"
    RETRY = "retry"
    RELEASE = "release"
    LEAVE = "leave"


# When one message names several instances, the most cautious outcome decides its fate.
_SEVERITY = [
    Outcome.DONE,
    Outcome.NO_ACTION,
    Outcome.IGNORED,
    Outcome.TEST_NOTIFICATION,
    Outcome.MALFORMED,
    Outcome.FAILED,
    Outcome.UNKNOWN_INSTANCE,
    Outcome.OUT_OF_SCOPE,
    Outcome.DRY_RUN,
    Outcome.TRANSIENT,
]


def combine(outcomes: list[Outcome]) -> Outcome:
    return max(outcomes, key=_SEVERITY.index) if outcomes else Outcome.NO_ACTION


def fate(outcome: Outcome, unknown_instance_fate: Literal["delete", "release"]) -> Fate:
    if outcome is Outcome.TRANSIENT:
        return Fate.RETRY
    if outcome is Outcome.DRY_RUN:
        return Fate.LEAVE
    if outcome in (Outcome.UNKNOWN_INSTANCE, Outcome.OUT_OF_SCOPE) and unknown_instance_fate == "release":
        return Fate.RELEASE
    return Fate.DELETE


def count(kind: str, outcome: Outcome) -> None:
    metrics.MESSAGES_FINISHED.labels(kind=kind, outcome=outcome.value).inc()
