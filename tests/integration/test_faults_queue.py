"""The fault report's queue scenarios that fit in seconds (faults/scenarios/queue.py), each on a fresh environment of
its own (an audited control plane, moto's SQS behind the recording proxy, spotq as a real process), with short
outages and a small flood. Every figure comes from the cluster, the audit log and the queue.
"""

from __future__ import annotations

import pytest

from faults.env import Environment
from faults.scenarios import queue

from .faults_support import env, outcomes_missed, recovered_in_time, shown, small

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture


def test_every_warning_three_times_and_a_state_change_drain_each_node_once(env: Environment) -> None:
    found = queue.duplicates(env, small())
    print(shown(found))
    assert found.details["messages"] == 3 * 4
    assert outcomes_missed(found) == []
    assert found.drained_before_deadline == found.interruptions


def test_a_flood_of_bad_bodies_delays_no_real_warning_and_every_body_is_deleted(env: Environment) -> None:
    found = queue.poison_flood(env, small(flood=120, flood_real=3))
    print(shown(found), found.details["all_real_marked_seconds"], found.details["all_deleted_seconds"])
    assert found.details["bad_deleted"] == 120
    assert found.tracebacks == 0
    assert outcomes_missed(found) == []
    assert found.marked == found.drained_before_deadline == 3


def test_an_sqs_endpoint_refusing_connections_for_a_while_loses_nothing_and_spotq_recovers(env: Environment) -> None:
    found = queue.sqs_refused(env, small(sqs_outage=10.0))
    print(shown(found))
    assert outcomes_missed(found) == []
    assert found.details["evictions_during_outage"] > 0  # the drains went on without SQS


def test_a_hung_sqs_endpoint_loses_nothing_and_spotq_recovers(env: Environment) -> None:
    found = queue.sqs_hung(env, small(sqs_outage=10.0))
    print(shown(found))
    assert outcomes_missed(found) == []


def test_after_an_sqs_endpoint_refused_connections_spotq_says_ready_soon_after_its_return(
    env: Environment,
) -> None:
    # 45 s, as in the report: long enough for receives to fail in spotq, not only inside the SDK's own retries (a
    # 10 s outage can pass within them, and then readiness never turns).
    found = queue.sqs_refused(env, small(sqs_outage=45.0))
    print(shown(found), found.details["ready_again_after_seconds"])
    assert recovered_in_time(found.resume_seconds)  # receiving again: not the defect
    ready = found.details["ready_again_after_seconds"]
    assert isinstance(ready, float) and recovered_in_time(ready)  # the defect held it ~21 s
