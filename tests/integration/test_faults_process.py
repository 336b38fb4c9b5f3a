"""The fault report's process scenarios that fit in seconds (faults/scenarios/process.py), each on a fresh environment
of its own: an audited control plane, moto's SQS behind the recording proxy, spotq as real processes with a
ServiceAccount each. Every figure comes from the cluster (polled), the API server's audit log and the queue.
"""

from __future__ import annotations

import pytest

from faults.env import Environment
from faults.scenarios import process

from .faults_support import env, outcomes_missed, recovered_in_time, shown, small

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture


def test_kill_9_mid_wave_then_restart_resumes_every_drain_from_the_nodes_records(env: Environment) -> None:
    # The killed process's messages stay invisible for the 60 s visibility timeout: only the nodes' records can
    # bring the drains back in time. The test ends with the drains (the queue empties a minute later).
    found = process.kill_restart(env, small(restart_delay=2.0, wait_for_queue=False))
    print(shown(found))
    assert found.details["unfinished_at_kill"] > 0
    assert found.resume_never == 0
    assert recovered_in_time(found.resume_seconds)
    assert (found.lost, found.duplicate_evictions, found.duplicate_drains, found.pdb_violations) == (0, 0, 0, 0)
    assert found.drained_before_deadline == found.interruptions


def test_sigterm_mid_wave_with_the_new_process_up_loses_nothing_and_hands_over(env: Environment) -> None:
    # One pod at a time, Ready 3 s after binding: the drains outlast the old process's 20 s stop grace.
    found = process.rolling_update(env, small())
    print(shown(found))
    assert found.details["old_exit_code"] == 0
    assert found.resume_never == 0
    assert outcomes_missed(found) == []


def test_two_replicas_on_one_wave_one_killed_mid_wave_drain_each_node_once_and_take_over(env: Environment) -> None:
    assert process.replicas_available() == ""  # multi-replica coordination is in (SPOTQ_KUBE__REPLICA_LEASE_SECONDS)
    found = process.replicas(env, small(), count=2)
    print(shown(found), found.details["claims_at_kill"])
    assert found.details["unfinished_of_killed"] > 0
    assert found.resume_never == 0
    assert outcomes_missed(found) == []


def test_spotqs_own_node_interrupted_it_leaves_mid_wave_and_its_replacement_finishes_the_wave(
    env: Environment,
) -> None:
    # Its own node is warned first and drained first: spotq evicts its own pod with the other nodes' drains under
    # way, goes on with them through its stop grace, and the replacement pod takes over what is left.
    found = process.own_node(env, small())
    print(shown(found), found.details.get("own_pod_evicted_seconds"), found.details.get("old_exit_seconds"))
    assert found.own_targets["off its node before it died"]
    assert found.details["unfinished_when_old_exited"] > 0
    assert found.resume_never == 0
    assert recovered_in_time(found.resume_seconds)
    assert outcomes_missed(found) == []
