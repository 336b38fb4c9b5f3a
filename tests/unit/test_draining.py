"""Drain decisions: kubectl drain's filters, 429 back-off, Retry-After, the deadline (and moving it earlier), grace
clamping, pods that arrive during the drain, force-deleting before the deadline."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from spotq import draining
from spotq.budgets import Budgets
from spotq.draining import DrainDeadline, DrainOptions, Pod
from spotq.errors import ApiError
from tests.fakes import FakePods

FAST = DrainOptions(retry_initial_seconds=0.02, retry_max_seconds=0.1, settle_seconds=0.0)


async def run(
    pods: FakePods,
    seconds: float | DrainDeadline = 5.0,
    options: DrainOptions = FAST,
    budgets: Budgets | None = None,
) -> draining.DrainReport:
    deadline = seconds if isinstance(seconds, DrainDeadline) else asyncio.get_running_loop().time() + seconds
    return await draining.drain("n1", deadline, pods, options, asyncio.Semaphore(100), budgets)


def web_budget(allowed: int, version: int = 1, disrupted: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "web", "generation": 1, "resourceVersion": str(version)},
        "spec": {"selector": {"matchLabels": {"app": "web"}}},
        "status": {
            "disruptionsAllowed": allowed,
            "observedGeneration": 1,
            "disruptedPods": {name: "2026-12-02T13:20:29Z" for name in disrupted},
        },
    }


@dataclass
class ArrivingPods(FakePods):
    """When `trigger` is first evicted, `arrivals` are bound to its node (as a scheduler or controller would)."""

    trigger: str = ""
    arrivals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    evicted: asyncio.Event = field(default_factory=asyncio.Event)

    async def evict(self, pod: Pod, grace_seconds: int | None) -> None:
        self.evicted.set()
        try:
            await super().evict(pod, grace_seconds)
        finally:
            if pod.name == self.trigger:
                self.trigger = ""
                for name, fields in self.arrivals:
                    self.arrive("n1", name, **fields)


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
    ("pod_grace", "left", "expected"), [(30, 100.0, None), (30, 20.0, 19), (600, 10.5, 9), (5, 0.2, 1), (0, 0.2, None)]
)
def test_grace_is_clamped_to_end_before_the_deadline(pod_grace: int, left: float, expected: int | None) -> None:
    # Never below 1 s: 0 would remove the pod from the API at once while its containers may still run.
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
    assert report.blocked["ns/db-0"] == "PodDisruptionBudget ns/db allows no disruption (429)"


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


async def test_pods_bound_to_the_node_during_the_drain_are_evicted_too() -> None:
    pods = ArrivingPods(
        trigger="web-0",
        arrivals=[("late", {}), ("agent", {"controller_kind": "DaemonSet"})],
        recreate={"db-0"},  # a StatefulSet puts db-0 back (same name, new UID)
        delete_delay_seconds=0.05,
    )
    pods.add("n1", "web-0")
    pods.add("n1", "db-0", controller_kind="StatefulSet")
    report = await run(pods)
    assert report.complete
    assert sorted(report.evicted) == ["ns/db-0", "ns/db-0", "ns/late", "ns/web-0"]
    assert report.skipped == ["ns/agent"]
    assert [pod.name for node, pod, _ in pods.pods.values() if node == "n1"] == ["agent"]
    assert [verb for verb, _, _ in pods.calls].count("list") == 1  # seen on the watch, not by listing again


async def test_the_drain_keeps_watching_for_settle_seconds_before_it_reports_complete() -> None:
    pods = FakePods()
    pods.add("n1", "agent", controller_kind="DaemonSet")
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, pods.arrive, "n1", "bound-before-the-taint")
    start = loop.time()
    report = await run(pods, options=DrainOptions(retry_initial_seconds=0.02, settle_seconds=0.4))
    assert report.complete and report.evicted == ["ns/bound-before-the-taint"]
    assert loop.time() - start >= 0.4
    assert "uid-bound-before-the-taint" not in pods.pods


async def test_settling_ends_at_the_deadline_without_calling_an_empty_node_timed_out() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    report = await run(FakePods(), seconds=0.2, options=DrainOptions(settle_seconds=5.0))
    assert report.complete and not report.timed_out
    assert loop.time() - start < 1.0


async def test_force_delete_fires_on_time_while_a_busy_budget_never_has_room() -> None:
    budgets = Budgets()
    budgets.active = True
    budgets.update(web_budget(0))
    pods = FakePods(budgets={"web": 0})
    pods.add("n1", "web-0", group="web", labels=(("app", "web"),))

    async def status_keeps_changing() -> None:
        for version in range(2, 1000):  # progress, never room: the waiter's patience never runs out
            await asyncio.sleep(0.1)
            budgets.update(web_budget(0, version))

    options = DrainOptions(force_delete_before_deadline_seconds=1.0, settle_seconds=0.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5
    churn = asyncio.create_task(status_keeps_changing())
    try:
        report = await run(pods, DrainDeadline(deadline), options, budgets)
    finally:
        churn.cancel()
    force_at = deadline - 1.0
    (deleted_at,) = pods.delete_times
    assert force_at <= deleted_at < force_at + 0.5
    (grace,) = [grace for verb, _, grace in pods.calls if verb == "delete"]
    assert grace is not None and grace >= 1
    assert report.complete and report.evicted == ["ns/web-0"]
    assert report.forced == {
        "ns/web-0": "force-deleted before the deadline; PodDisruptionBudget ns/web allowed no disruption"
    }
    assert pods.evictions_of("web-0") == []  # the budget never had room: the API server was not asked


async def test_a_deadline_moved_earlier_ends_the_running_drain_then() -> None:
    pods = ArrivingPods(budgets={"db": 0})
    pods.add("n1", "db-0", group="db")
    loop = asyncio.get_running_loop()
    deadline = DrainDeadline(loop.time() + 30)
    drain = asyncio.create_task(run(pods, deadline))
    await pods.evicted.wait()
    assert not deadline.move_earlier(loop.time() + 60)  # never later
    earlier = loop.time() + 0.2
    assert deadline.move_earlier(earlier) and deadline.at == earlier
    async with asyncio.timeout(2):
        report = await drain
    assert report.timed_out and "ns/db-0" in report.blocked
    assert earlier <= loop.time() < earlier + 0.5


async def test_a_moved_deadline_moves_the_force_delete_and_the_grace() -> None:
    pods = ArrivingPods(budgets={"db": 0})
    pods.add("n1", "db-0", group="db", grace_seconds=600)
    options = DrainOptions(retry_initial_seconds=0.02, force_delete_before_deadline_seconds=1.0, settle_seconds=0.0)
    loop = asyncio.get_running_loop()
    deadline = DrainDeadline(loop.time() + 300)
    drain = asyncio.create_task(run(pods, deadline, options))
    await pods.evicted.wait()
    deadline.move_earlier(loop.time() + 3.3)
    async with asyncio.timeout(5):
        report = await drain
    (deleted_at,) = pods.delete_times
    assert deadline.at - 1.0 <= deleted_at < deadline.at - 0.5
    assert [grace for verb, _, grace in pods.calls if verb == "delete"] == [1]  # ends before the moved deadline
    assert report.complete
    assert (
        report.forced["ns/db-0"] == "force-deleted before the deadline; PodDisruptionBudget ns/db allowed no disruption"
    )


async def test_a_pod_still_waiting_for_its_budget_at_the_deadline_names_the_budget() -> None:
    budgets = Budgets()
    budgets.active = True
    budgets.update(web_budget(0))
    pods = FakePods(budgets={"web": 0})
    pods.add("n1", "web-0", group="web", labels=(("app", "web"),))
    report = await run(pods, 0.3, FAST, budgets)
    assert report.timed_out
    assert report.blocked == {"ns/web-0": "waiting for PodDisruptionBudget ns/web to allow a disruption"}
    assert report.forced == {}


async def test_system_critical_pods_are_evicted_after_the_ordinary_ones_have_gone() -> None:
    pods = FakePods(delete_delay_seconds=0.2)
    pods.add("n1", "dns", critical=True)
    for i in range(3):
        pods.add("n1", f"web-{i}")
    report = await run(pods, options=dataclasses.replace(FAST, critical_reserve_seconds=1.0))
    assert report.complete
    evictions = [name for verb, name, _ in pods.calls if verb == "evict"]
    assert evictions[-1] == "dns" and sorted(evictions[:3]) == ["web-0", "web-1", "web-2"]
    web_gone = max(pods.call_times[:3]) + 0.2
    assert pods.call_times[3] >= web_gone - 0.01  # not evicted before the ordinary pods were gone


async def test_system_critical_pods_go_at_the_reserve_while_an_ordinary_pod_is_still_blocked() -> None:
    pods = FakePods(budgets={"db": 0})
    pods.add("n1", "db-0", group="db")  # its budget never allows: it holds the ordinary tier until the deadline
    pods.add("n1", "dns", critical=True)
    options = DrainOptions(retry_initial_seconds=0.02, retry_max_seconds=0.1, settle_seconds=0.0,
                           critical_reserve_seconds=0.3)  # fmt: skip
    started = asyncio.get_running_loop().time()
    report = await run(pods, seconds=0.6, options=options)
    dns_at = pods.call_times[[name for verb, name, _ in pods.calls if verb == "evict"].index("dns")]
    assert 0.25 <= dns_at - started < 0.45  # 0.3 s before the 0.6 s deadline
    assert "ns/dns" in report.evicted and "ns/db-0" in report.blocked


async def test_a_critical_pod_alone_goes_at_once() -> None:
    pods = FakePods()
    pods.add("n1", "dns", critical=True)
    started = asyncio.get_running_loop().time()
    report = await run(pods)
    assert report.complete and pods.call_times[0] - started < 0.05


async def test_each_evicted_pod_is_reported_once_and_skipped_ones_never() -> None:
    pods = FakePods()
    pods.add("n1", "web-1")
    pods.add("n1", "web-2", "web")
    pods.add("n1", "ds", controller_kind="DaemonSet")
    pods.budgets["web"] = 0  # a refusal first: the second attempt is accepted once the budget recovers
    asyncio.get_running_loop().call_later(0.1, pods._recover, "web")
    reported: list[str] = []
    deadline = asyncio.get_running_loop().time() + 5.0
    report = await draining.drain(
        "n1", deadline, pods, FAST, asyncio.Semaphore(100), None, on_evicted=lambda pod: reported.append(pod.uid)
    )
    assert report.complete
    assert sorted(reported) == ["uid-web-1", "uid-web-2"]


async def test_a_pod_whose_eviction_its_budget_admitted_but_that_was_not_deleted_is_deleted() -> None:
    # An eviction cut off inside the API server (504 "context canceled", a server killed mid-request): the budget
    # lists web-0 as disrupted and allows nothing more for two minutes; evicting it again is refused (429) all
    # that time. The drain deletes it instead, the eviction's second half, and web-1 still waits for room.
    budgets = Budgets()
    budgets.active = True
    budgets.update(web_budget(0, disrupted=("web-0",)))
    pods = FakePods(budgets={"web": 0})
    pods.add("n1", "web-0", group="web", labels=(("app", "web"),), grace_seconds=5)
    pods.add("n1", "web-1", group="web", labels=(("app", "web"),))
    report = await run(pods, 0.5, FAST, budgets)
    assert [name for verb, name, _ in pods.calls if verb == "delete"] == ["web-0"]
    assert pods.evictions_of("web-0") == []
    assert "ns/web-0" in report.evicted and "ns/web-0" not in report.blocked
    assert report.blocked == {"ns/web-1": "waiting for PodDisruptionBudget ns/web to allow a disruption"}


@dataclass
class NoDeletePods(FakePods):
    """spotq's ServiceAccount may not delete pods (drain.completeAdmittedEvictions off in the chart, or no RBAC)."""

    async def delete(self, pod: Pod, grace_seconds: int | None) -> None:
        self.calls.append(("delete", pod.name, grace_seconds))
        raise ApiError(403, "Forbidden", 'pods "web-0" is forbidden')


async def test_without_leave_to_delete_pods_an_admitted_pod_waits_for_its_budget_and_is_asked_once() -> None:
    budgets = Budgets()
    budgets.active = True
    budgets.update(web_budget(0, disrupted=("web-0",)))
    pods = NoDeletePods(budgets={"web": 0})
    pods.add("n1", "web-0", group="web", labels=(("app", "web"),))

    async def budget_lets_it_go() -> None:  # the entry expires; the budget has room again
        await asyncio.sleep(0.3)
        pods.budgets["web"] = 1
        budgets.update(web_budget(1, 2))

    room = asyncio.create_task(budget_lets_it_go())
    report = await run(pods, 3.0, FAST, budgets)
    await room
    assert report.complete and report.evicted == ["ns/web-0"]
    assert [name for verb, name, _ in pods.calls if verb == "delete"] == ["web-0"]  # refused once, not again
    assert len(pods.evictions_of("web-0")) >= 1


async def quiet_drain(pods: FakePods, options: DrainOptions) -> tuple[draining.DrainReport, list[float], float]:
    """A drain of n1 with `on_quiet`: its report, when it went quiet (loop time) and when it ended."""
    loop = asyncio.get_running_loop()
    quiet: list[float] = []
    report = await draining.drain(
        "n1", loop.time() + 5, pods, options, asyncio.Semaphore(10), on_quiet=lambda: quiet.append(loop.time())
    )
    return report, quiet, loop.time()


async def test_a_drain_goes_quiet_once_every_eviction_is_accepted_and_it_has_settled() -> None:
    pods = FakePods(delete_delay_seconds=0.4)
    pods.add("n1", "a")
    pods.add("n1", "b")
    start = asyncio.get_running_loop().time()
    report, quiet, ended = await quiet_drain(pods, dataclasses.replace(FAST, settle_seconds=0.1))
    assert report.complete and sorted(report.evicted) == ["ns/a", "ns/b"]
    assert len(quiet) == 1
    assert quiet[0] >= start + 0.1  # not before the settle period is over
    assert quiet[0] >= max(pods.call_times)  # nor before the last eviction is accepted
    assert quiet[0] < ended - 0.2  # but well before the pods' grace is over


async def test_a_drain_is_not_quiet_while_a_pod_still_waits_for_its_budget() -> None:
    pods = FakePods(delete_delay_seconds=0.05)
    pods.add("n1", "a")
    pods.add("n1", "b", group="web")
    pods.budgets["web"] = 0
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, pods._recover, "web")  # the budget makes room after a while
    report, quiet, _ = await quiet_drain(pods, FAST)
    assert report.complete
    evictions = [name for verb, name, _ in pods.calls if verb == "evict"]
    accepted_b = max(t for t, name in zip(pods.call_times, evictions, strict=True) if name == "b")
    assert evictions.count("b") > 1  # refused (429) at first
    assert len(quiet) == 1 and quiet[0] >= accepted_b
