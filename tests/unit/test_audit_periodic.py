"""The periodic audit's loop: its lists wait behind everything else, a run never starts while a drain runs, gauges
of a check that stops finding go to 0, and a cluster that cannot be read counts a failed run and keeps the figures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spotq.audit import periodic
from spotq.audit.checks import Finding, Severity
from spotq.errors import ApiError
from spotq.observability import metrics
from spotq.ratelimit import Priority
from spotq.settings import Settings
from tests.unit.test_audit_reading import PagedApi

JSON = dict[str, Any]
SPOT_NODE = {"metadata": {"name": "n1", "labels": {"eks.amazonaws.com/capacityType": "SPOT"}}}
BARE_POD = {
    "metadata": {"name": "debug", "namespace": "ns"},
    "spec": {"nodeName": "n1"},
    "status": {"phase": "Running"},
}


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


class Priorities(PagedApi):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.priorities: set[Priority] = set()

    async def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        self.priorities.add(kwargs.get("priority", Priority.WORK))
        return await super().request(method, path, **kwargs)


class StopLoopError(Exception):
    pass


def settings(monkeypatch: pytest.MonkeyPatch, interval: str = "600") -> Settings:
    monkeypatch.setenv("SPOTQ_AUDIT__INTERVAL_SECONDS", interval)
    return Settings()


async def one_round(api: PagedApi, config: Settings, busy_rounds: int = 0) -> list[float]:
    """run_periodically until its first run is done: the sleeps it asked for."""
    slept: list[float] = []
    busy = iter([True] * busy_rounds + [False] * 100)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 1 and seconds == config.audit.interval_seconds:
            raise StopLoopError
        await asyncio.sleep(0)

    with pytest.raises(StopLoopError):
        await periodic.run_periodically(api, config, busy=lambda: next(busy), sleep=sleep)
    return slept


async def test_a_run_waits_behind_the_drains_and_its_lists_behind_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    api = Priorities(items={"/api/v1/nodes": [SPOT_NODE], "/api/v1/pods": [BARE_POD]})
    slept = await one_round(api, settings(monkeypatch), busy_rounds=2)
    assert slept == [periodic.FIRST_RUN_SECONDS, periodic.BUSY_POLL_SECONDS, periodic.BUSY_POLL_SECONDS, 600.0]
    assert api.priorities == {Priority.NOTE}
    assert sample("spotq_audit_findings", check="bare-pod", severity="high") == 1
    assert sample("spotq_audit_at_risk") == 1 and sample("spotq_audit_spot_nodes") == 1


async def test_a_short_interval_runs_first_after_one_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    slept = await one_round(PagedApi(), settings(monkeypatch, "5"))
    assert slept == [5.0, 5.0]


async def test_a_cluster_that_cannot_be_read_counts_a_failed_run_and_keeps_the_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = settings(monkeypatch)
    await one_round(PagedApi(items={"/api/v1/nodes": [SPOT_NODE], "/api/v1/pods": [BARE_POD]}), config)
    failed_before = sample("spotq_audit_runs_total", result="failed") or 0.0
    refused = PagedApi(refuse={"/api/v1/nodes": ApiError(403, "Forbidden", "nodes is forbidden")})
    await one_round(refused, config)
    assert sample("spotq_audit_runs_total", result="failed") == failed_before + 1
    assert sample("spotq_audit_findings", check="bare-pod", severity="high") == 1


def test_a_check_that_stops_finding_goes_to_zero() -> None:
    publisher = periodic.Publisher()
    found = [Finding("pdb-overlap", Severity.HIGH, "Deployment", "ns", n, "x") for n in ("a", "b")]
    publisher.publish([*found, Finding("no-pdb", Severity.WARNING, "Deployment", "ns", "c", "x")], spot_nodes=3)
    assert sample("spotq_audit_findings", check="pdb-overlap", severity="high") == 2
    publisher.publish([Finding("no-pdb", Severity.WARNING, "Deployment", "ns", "c", "x")], spot_nodes=3)
    assert sample("spotq_audit_findings", check="pdb-overlap", severity="high") == 0
    assert sample("spotq_audit_findings", check="no-pdb", severity="warning") == 1
    publisher.publish([], spot_nodes=0)
    assert (
        sample("spotq_audit_findings", check="no-pdb", severity="warning") == 0 and sample("spotq_audit_at_risk") == 0
    )
