"""Two replicas' actors on one node: one drain between them however the notices are spread, the other replica's
notice waiting for that drain's end, and a takeover once the drainer's Lease expires (with or without a message).

The replicas share one node (a writer that applies each PATCH to it and shows it to both indexes at once, like a
watch with no lag), one set of pods and the Leases; each has its own index, actor and view of the Leases.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spotq import acting, handover, planning, resuming, selectors
from spotq.draining import DrainDeadline, DrainOptions
from spotq.errors import TransientError
from spotq.kube.nodes import NodeIndex, NodeRef
from spotq.notices import SpotInterruption
from spotq.observability import logs
from spotq.ports import DrainRecord, NodeMarks
from spotq.settings import Settings
from spotq.slots import DeadlineSlots
from tests.fakes import FakePods
from tests.unit.test_acting import INSTANCE, NODE_JSON, FakeEvents, FakeLifecycle, FakeWriter

POLICY = planning.Policy.from_settings(Settings())


@dataclass
class SharedNode(FakeWriter):
    """The node as the API server holds it; every write bumps its resourceVersion and reaches each index."""

    indexes: list[NodeIndex] = field(default_factory=list)

    def current(self) -> dict[str, Any]:
        meta = {**NODE_JSON["metadata"], **self.node["metadata"], "uid": "uid-n1"}
        return {**NODE_JSON, "metadata": meta, "spec": {**NODE_JSON["spec"], **self.node["spec"]}}

    async def mark(self, node: NodeRef, marks: NodeMarks) -> tuple[bool, DrainRecord]:
        result = await super().mark(node, marks)
        await self._publish(result[0])
        return result

    async def claim_drain(self, node: NodeRef, drainer: str, may_claim: Callable[[DrainRecord], bool]) -> DrainRecord:
        before = dict(self.node["metadata"]["annotations"])
        record = await super().claim_drain(node, drainer, may_claim)
        await self._publish(before != self.node["metadata"]["annotations"])
        return record

    async def record_drain(self, node: NodeRef, state: str) -> None:
        await super().record_drain(node, state)
        await self._publish(True)

    async def _publish(self, wrote: bool) -> None:
        if not wrote:
            return
        meta = self.node["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        for index in self.indexes:
            await index._changed_by("MODIFIED", self.current())

    def record(self) -> DrainRecord:
        annotations = self.node["metadata"]["annotations"]
        return DrainRecord(annotations.get("spotq.io/drainer"), annotations.get("spotq.io/drain"))


@dataclass
class Leases:
    """The replicas' Leases: holder → the loop time its Lease expires unless renewed (as every replica sees it)."""

    expiry: dict[str, float] = field(default_factory=dict)
    count: int = 0  # Leases released so far (ports.Replicas.changes)
    waiters: list[asyncio.Event] = field(default_factory=list)

    def renew(self, holder: str, seconds: float) -> None:
        self.expiry[holder] = asyncio.get_running_loop().time() + seconds

    async def renewing(self, holder: str, seconds: float) -> None:
        """Renew every third of `seconds` until cancelled (a live replica)."""
        while True:
            self.renew(holder, seconds)
            await asyncio.sleep(seconds / 3)

    def release(self, holder: str) -> None:
        """`holder` deletes its Lease (a clean stop): gone at once and the waiters told, in one loop turn (as a
        watch's DELETED event reaches kube/leases.py)."""
        self.expiry[holder] = -math.inf
        self.count += 1
        for waiter in self.waiters:
            waiter.set()

    async def changed(self, since: int) -> None:
        while self.count <= since:
            waiter = asyncio.Event()
            self.waiters.append(waiter)
            try:
                await waiter.wait()
            finally:
                self.waiters.remove(waiter)


@dataclass
class FakeReplicas:
    """ports.Replicas over the shared Leases."""

    identity: str
    leases: Leases
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    looks: int = 0  # how often this replica looked at another's Lease

    def expires_at(self, holder: str) -> float | None:
        if holder == self.identity:
            return None
        self.looks += 1
        return self.leases.expiry.get(holder, -math.inf)

    @property
    def changes(self) -> int:
        return self.leases.count

    async def changed(self, since: int) -> None:
        await self.leases.changed(since)

    def holding(self) -> bool:
        return not self.dropped.is_set()

    async def lost(self) -> None:
        await self.dropped.wait()


@dataclass
class Replica:
    name: str
    actor: acting.Actor
    index: NodeIndex
    replicas: FakeReplicas


def replica(name: str, node: SharedNode, pods: FakePods, leases: Leases) -> Replica:
    index = NodeIndex(selectors.parse(""))
    index.apply(node.current())
    index.synced.set()
    node.indexes.append(index)
    replicas = FakeReplicas(name, leases)
    actor = acting.Actor(
        writer=node,
        pods=pods,
        events=FakeEvents(),
        lifecycle=FakeLifecycle(),
        index=index,
        config=acting.ActorConfig("spotq.io", DrainOptions(retry_initial_seconds=0.02, settle_seconds=0.1), 60.0),
        drain_slots=DeadlineSlots(10),
        evictions=asyncio.Semaphore(10),
        replicas=replicas,
    )
    return Replica(name, actor, index, replicas)


def warning() -> SpotInterruption:
    now = datetime.now(UTC)
    return SpotInterruption(
        event_id="e1", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(seconds=120)
    )


async def act(one: Replica, notice: SpotInterruption) -> object:
    plan = planning.plan(notice, POLICY, datetime.now(UTC))
    ref = one.index.by_name("n1")
    assert ref is not None
    return await one.actor.act(plan, notice, ref, asyncio.get_running_loop().time(), logs.get("test"))


def drains(pods: FakePods) -> int:
    """Drains started (each begins with one list of the node's pods)."""
    return [verb for verb, _, _ in pods.calls].count("list")


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


@pytest.fixture
def world() -> tuple[SharedNode, FakePods, Leases]:
    return SharedNode(), FakePods(budgets={"web": 0}), Leases()


async def test_a_warning_delivered_to_two_replicas_drains_the_node_once(
    world: tuple[SharedNode, FakePods, Leases],
) -> None:
    node, pods, leases = world
    for i in range(3):
        pods.add("n1", f"web-{i}", group="web")
    a, b = replica("a", node, pods, leases), replica("b", node, pods, leases)
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        renewals = [group.create_task(leases.renewing(name, 0.3)) for name in ("a", "b")]
        notice = warning()
        first = group.create_task(act(a, notice))
        second = group.create_task(act(b, notice))
        await until(lambda: drains(pods) == 1 and b.actor.handling("n1"))
        looked = b.replicas.looks
        await until(lambda: b.replicas.looks >= looked + 2)  # b woke at a's expiry, found it renewed, waits on
        assert drains(pods) == 1
        pods.budgets["web"] = 3  # the budget makes room: a's drain finishes
        await first
        assert await second is None  # b's notice shares the fate of a's drain, without a drain of its own
        for renewal in renewals:
            renewal.cancel()
    assert drains(pods) == 1
    assert not pods.pods  # every pod evicted, by a's drain alone
    assert node.record() == DrainRecord("a", "finished")


async def test_a_waiting_replica_takes_the_drain_over_once_the_drainers_lease_expires(
    world: tuple[SharedNode, FakePods, Leases],
) -> None:
    node, pods, leases = world
    pods.add("n1", "web-0", group="web")
    a, b = replica("a", node, pods, leases), replica("b", node, pods, leases)
    loop = asyncio.get_running_loop()
    leases.renew("a", 0.5)  # a's last renewal: it is killed before the next
    leases.renew("b", 60)
    notice = warning()
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        killed = group.create_task(act(a, notice))
        waiting = group.create_task(act(b, notice))
        await until(lambda: drains(pods) == 1 and b.actor.handling("n1"))
        killed.cancel()  # kill -9: no end on record, the claim stays a's
        await until(killed.done)
        assert node.record() == DrainRecord("a", "started")
        pods.budgets["web"] = 1
        report = await waiting
    assert loop.time() >= leases.expiry["a"]  # not before a's Lease expired
    assert report is not None and report.complete and report.evicted == ["ns/web-0"]
    assert drains(pods) == 2 and node.record() == DrainRecord("b", "finished")


async def test_a_lease_released_as_the_wait_for_its_drain_begins_ends_the_wait_at_once(
    world: tuple[SharedNode, FakePods, Leases],
) -> None:
    """The drainer stops cleanly and deletes its Lease in the loop turn between the waiting replica's look at the
    Leases and the start of its wait (the wait's tasks start a turn later): the wait ends then, not at the Lease's
    last expiry (own-node fault run: a drain resumed 8.3 s after the old process exited, its Lease's remainder)."""
    node, pods, leases = world
    pods.add("n1", "web-0", group="web")
    a, b = replica("a", node, pods, leases), replica("b", node, pods, leases)
    leases.renew("a", 30)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        stopped = group.create_task(act(a, warning()))
        await until(lambda: drains(pods) == 1)
        stopped.cancel()  # a's drain stopped; its record still says a drains the node
        await until(stopped.done)
        record = node.record()
        assert record == DrainRecord("a", "started")
        loop.call_soon(leases.release, "a")  # runs before the wait's tasks do
        began = loop.time()
        found = await handover.await_owner(b.replicas, b.index, "n1", record, DrainDeadline(began + 60))
    assert found == record  # the drainer is gone: its drain is b's to take over
    assert loop.time() - began < 1.0


async def test_a_gone_replicas_drain_is_taken_over_without_a_message(
    world: tuple[SharedNode, FakePods, Leases],
) -> None:
    node, pods, leases = world
    pods.add("n1", "web-0", group="web")
    a, b = replica("a", node, pods, leases), replica("b", node, pods, leases)
    leases.renew("a", 0.3)
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        killed = group.create_task(act(a, warning()))
        await until(lambda: drains(pods) == 1)
        killed.cancel()
        await until(killed.done)
        pods.budgets["web"] = 1
        scanning = group.create_task(resuming.resume_unfinished(b.index, b.actor, b.replicas))
        await until(lambda: node.record().state == "finished")
        scanning.cancel()
    assert node.record() == DrainRecord("b", "finished") and drains(pods) == 2


async def test_a_live_replicas_drain_is_not_taken_over_by_the_scan(world: tuple[SharedNode, FakePods, Leases]) -> None:
    node, pods, leases = world
    pods.add("n1", "web-0", group="web")
    a, b = replica("a", node, pods, leases), replica("b", node, pods, leases)
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        renewing = group.create_task(leases.renewing("a", 0.3))
        draining = group.create_task(act(a, warning()))
        await until(lambda: drains(pods) == 1)
        scanning = group.create_task(resuming.resume_unfinished(b.index, b.actor, b.replicas))
        await until(lambda: b.replicas.looks >= 3)  # the scan woke at a's expiry twice: renewed all along
        assert drains(pods) == 1
        pods.budgets["web"] = 1
        await draining
        scanning.cancel()
        renewing.cancel()
    assert node.record() == DrainRecord("a", "finished")


async def test_a_drain_stops_when_its_replica_cannot_renew_its_lease(
    world: tuple[SharedNode, FakePods, Leases],
) -> None:
    """Before the others may see its Lease expire, a replica that cannot renew it stops its drains (the message is
    retried); its scan resumes them once it holds the Lease again."""
    node, pods, leases = world
    pods.add("n1", "web-0", group="web")
    a = replica("a", node, pods, leases)
    async with asyncio.timeout(10):
        draining = asyncio.create_task(act(a, warning()))
        await until(lambda: drains(pods) == 1)
        a.replicas.dropped.set()
        with pytest.raises(TransientError, match="Lease was not renewed"):
            await draining
        assert a.actor.abandoned("n1") and node.record() == DrainRecord("a", "started")
        a.replicas.dropped.clear()
        pods.budgets["web"] = 1
        scanning = asyncio.create_task(resuming.take_over(a.index, a.actor, a.replicas))
        await until(lambda: node.record().state == "finished")
        scanning.cancel()
    assert not a.actor.abandoned("n1") and drains(pods) == 2


async def test_a_replica_stops_draining_a_node_another_took_over(world: tuple[SharedNode, FakePods, Leases]) -> None:
    node, pods, leases = world
    pods.add("n1", "web-0", group="web")
    a = replica("a", node, pods, leases)
    async with asyncio.timeout(10):
        draining = asyncio.create_task(act(a, warning()))
        await until(lambda: drains(pods) == 1)
        await node.claim_drain(a.index.by_name("n1"), "b", lambda record: True)  # type: ignore[arg-type]
        with pytest.raises(TransientError, match="took the drain over"):
            await draining
