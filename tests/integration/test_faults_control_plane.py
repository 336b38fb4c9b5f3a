"""The fault report's API-server scenarios, short (faults/scenarios/control_plane.py): SIGSTOP/SIGCONT and kill -9 +
restart of the kube-apiserver mid-wave, each on a fresh environment of its own. Counted from the cluster, the audit
log and the queue.
"""

from __future__ import annotations

import pytest

from faults.env import Environment
from faults.scenarios import control_plane

from .faults_support import env, outcomes_missed, recovered_in_time, shown, small

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture


def test_a_paused_api_server_mid_wave_loses_nothing_and_spotq_resumes(env: Environment) -> None:
    found = control_plane.apiserver_pause(env, small(apiserver_pause=8.0))
    print(shown(found))
    assert outcomes_missed(found) == [] and recovered_in_time(found.resume_seconds)
    assert found.drained_before_deadline == found.interruptions


def test_a_restarted_api_server_mid_wave_loses_nothing_and_spotq_resumes(env: Environment) -> None:
    found = control_plane.apiserver_restart(env, small(restart_delay=2.0))
    print(shown(found))
    assert outcomes_missed(found) == [] and recovered_in_time(found.resume_seconds)
    assert found.drained_before_deadline == found.interruptions


def test_a_revoked_token_loses_nothing_and_spotq_resumes_with_the_new_one(env: Environment) -> None:
    found = control_plane.token_revoked(env, small(token_outage=8.0))
    print(shown(found))
    assert outcomes_missed(found) == [] and recovered_in_time(found.resume_seconds)
    assert found.drained_before_deadline == found.interruptions
    # nothing of spotq's was authenticated between the first refusal of its token and the new one
    assert found.details["last_request_before_renewal_seconds"] < 1.0
