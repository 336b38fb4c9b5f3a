"""The fault report's API-server scenarios, short (faults/scenarios/control_plane.py): SIGSTOP/SIGCONT and kill -9 +
restart of the kube-apiserver mid-wave, each on a fresh environment of its own. Counted from the cluster, the audit
log and the queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.env import Environment
from faults.scenarios import control_plane
from faults.trial import Options

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Environment]:
    environment = Environment.create(tmp_path / "env", sqs="moto")
    try:
        yield environment
    finally:
        environment.close()


def small(**changes: object) -> Options:
    base: dict[str, object] = {"nodes": 3, "pods_per_node": 4, "max_unavailable": "1", "quiet": True}
    return Options(**(base | changes))  # type: ignore[arg-type]


def test_a_paused_api_server_mid_wave_loses_nothing_and_spotq_resumes_within_5_s(env: Environment) -> None:
    found = control_plane.apiserver_pause(env, small(apiserver_pause=8.0))
    print(found.as_dict()["targets"], found.resume_seconds, found.details.get("resume_per_node"))
    assert found.missed() == []
    assert found.drained_before_deadline == found.interruptions


def test_a_restarted_api_server_mid_wave_loses_nothing_and_spotq_resumes_within_5_s(env: Environment) -> None:
    found = control_plane.apiserver_restart(env, small(restart_delay=2.0))
    print(found.as_dict()["targets"], found.resume_seconds, found.details.get("resume_per_node"))
    assert found.missed() == []
    assert found.drained_before_deadline == found.interruptions
