"""Drain decisions: kubectl drain's filters, 429 back-off, Retry-After, the deadline, grace clamping."""

from __future__ import annotations

import asyncio

import pytest

from spotq import draining
from spotq.draining import DrainOptions, Pod
from spotq.errors import ApiError
from tests.fakes import FakePods

FAST = DrainOptions(retry_initial_seconds=0.02, retry_max_seconds=0.1)


async def run(pods: FakePods, seconds: float = 5.0, options: DrainOptions = FAST) -> draining.DrainReport:
    deadline = asyncio.get_running_loop().time() + seconds
    return await draining.drain("n1", deadline, pods, options, asyncio.Semaphore(100))


def test_selection_follows_kubectl_drain() -> None:
    pods = [
        Pod("kube-system", "mirror", "1", mirror=True),
        Pod("kube-system", "ds", "2", controller_kind="DaemonSet"),
        Pod("app", "web", "3", controller_kind="ReplicaSet"),
        Pod("app", "bare", "4"),
        Pod("app", "cache", "5", controller_kind="ReplicaSet", uses_emptydir=True),
        Pod("app", "done", "6", phase="Succeeded"),
        Pod("app", "leaving", "7", controller_kind="ReplicaSet", terminating=True),
        Pod("spotq", "spotq-abc", "8", controller_kind="ReplicaSet"),
    ]
    options = DrainOptions(protected=frozenset({"spotq/spotq-abc"}))
    chosen = draining.select(pods, options)
    assert [p.name for p in chosen.skipped] == ["mirror", "ds", "spotq-abc"]
    assert [p.name for p in chosen.evict] == ["web", "bare", "cache", "done"]
    assert [p.name for p in chosen.wait_only] == ["leaving"]
    strict = draining.select(pods, DrainOptions(delete_emptydir_data=False, evict_unmanaged_pods=False))
    assert sorted(p.name for p, _ in strict.refused) == ["bare", "cache"]


@pytest.mark.parametrize(
    ("pod_grace", "left", "expected"), [(30, 100.0, None), (30, 20.0, 19), (600, 10.5, 9), (5, 0.2, 0)]
)
def test_grace_is_clamped_to_end_before_the_deadline(pod_grace: int, left: float, expected: int | None) -> None:
    assert draining.clamp_grace(pod_grace, left) == expected


def test_backoff_honours_retry_after_and_is_never_zero() -> None:
    options = DrainOptions(retry_initial_seconds=0.001, retry_max_seconds=0.001)
    assert draining.backoff(0, options, None) >= 0.05
    assert draining.backoff(0, options, 3.0) == 3.0
    assert draining.backoff(10, DrainOptions(), None) <= 5.0


async def test_all_pods_evicted_and_awaited() -> None:
    pods = FakePods()
    for i in range(5):
        pods.add("n1", f"web-{i}")
    pods.add("n1", "ds", controller_kind="DaemonSet")
    pods.add("n2", "elsewhere")
    report = await run(pods)
    assert report.complete
    assert sorted(report.evicted) == [f"ns/web-{i}" for i in range(5)]
    assert report.skipped == ["ns/ds"]
    assert {uid for uid in pods.pods} == {"uid-ds", "uid-elsewhere"}
    # One list and one watch for the node, one eviction per pod: no polling.
    assert [verb for verb, _, _ in pods.calls].count("list") == 1
    assert [verb for verb, _, _ in pods.calls].count("evict") == 5


async def test_pdb_refusals_back_off_and_finish_when_budget_returns() -> None:
    pods = FakePods(budgets={"web": 1}, recover_seconds=0.1)
    for i in range(3):
        pods.add("n1", f"web-{i}", group="web")
    report = await run(pods)
    assert report.complete and len(report.evicted) == 3
    attempts = len([c for c in pods.calls if c[0] == "evict"])
    assert 3 < attempts < 40, attempts  # retried, but not in a tight loop


async def test_retry_after_is_honoured() -> None:
    pods = FakePods(budgets={"web": 0}, recover_seconds=0.0, retry_after=0.3)
    pods.add("n1", "web-0", group="web")
    asyncio.get_running_loop().call_later(0.05, pods._recover, "web")
    report = await run(pods)
    assert report.complete
    first, second = pods.call_times[:2]
    assert second - first >= 0.29


async def test_deadline_stops_the_drain_and_names_the_blocker() -> None:
    pods = FakePods(budgets={"db": 0})
    pods.add("n1", "db-0", group="db")
    pods.add("n1", "web-0")
    report = await run(pods, seconds=0.5)
    assert report.timed_out and not report.complete
    assert report.evicted == ["ns/web-0"]
    assert "PodDisruptionBudget" in report.blocked["ns/db-0"]


async def test_long_grace_is_shortened_to_fit_the_deadline() -> None:
    pods = FakePods()
    pods.add("n1", "slow", grace_seconds=600)
    pods.add("n1", "quick", grace_seconds=5)
    await run(pods, seconds=30)
    assert pods.evictions_of("quick") == [None]
    (grace,) = pods.evictions_of("slow")
    assert grace is not None and grace <= 29


async def test_gone_pods_need_no_waiting() -> None:
    pods = FakePods(forced_status={"ghost": ApiError(404, "Not Found")})
    pods.add("n1", "ghost")
    report = await run(pods, seconds=1)
    assert report.complete and report.evicted == []


async def test_more_than_one_pdb_is_reported_not_retried() -> None:
    error = ApiError(
        500,
        "Internal Server Error",
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
    )
    pods = FakePods(forced_status={"double": error})
    pods.add("n1", "double")
    pods.add("n1", "fine")
    report = await run(pods, seconds=60)
    assert not report.timed_out
    assert pods.evictions_of("double") == [None]
    assert "more than one PodDisruptionBudget" in report.blocked["ns/double"]
    assert report.evicted == ["ns/fine"]


async def test_finished_pods_are_evicted_without_waiting() -> None:
    pods = FakePods(delete_delay_seconds=10.0)
    pods.add("n1", "job", phase="Succeeded", group="web")
    report = await run(pods, seconds=2)
    assert report.complete and report.evicted == ["ns/job"]


async def test_force_delete_near_deadline_when_enabled() -> None:
    pods = FakePods(budgets={"db": 0})
    pods.add("n1", "db-0", group="db")
    options = DrainOptions(retry_initial_seconds=0.02, retry_max_seconds=0.05, force_delete_before_deadline_seconds=0.4)
    report = await run(pods, seconds=0.8, options=options)
    assert [verb for verb, name, _ in pods.calls if name == "db-0"][-1] == "delete"
    assert report.complete


async def test_force_delete_is_off_by_default() -> None:
    pods = FakePods(budgets={"db": 0})
    pods.add("n1", "db-0", group="db")
    report = await run(pods, seconds=0.5)
    assert not any(c[0] == "delete" for c in pods.calls)
    assert report.timed_out
