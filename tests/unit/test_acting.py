"""Acting on a node: marks once, one drain per node however many notices arrive, hooks completed after."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from spotq import acting, drain_runs, planning, selectors
from spotq.draining import DrainOptions
from spotq.kube.marks import (
    Marks,
    claim_patch,
    drain_record_after,
    marks_for,
    patch_for,
    release_patch_for,
    release_patch_if,
)
from spotq.kube.nodes import NodeIndex, NodeRef, node_ref
from spotq.kube.records import notice_key
from spotq.notices import (
    InstanceId,
    Kind,
    LifecycleHook,
    LifecycleTerminate,
    ScheduledChange,
    SpotInterruption,
    StateChange,
)
from spotq.observability import logs
from spotq.ports import DrainRecord, NodeMarks, NoticeRecord, Pod
from spotq.settings import Settings
from spotq.slots import DeadlineSlots
from tests.fakes import FakePods

INSTANCE = InstanceId("i-0b662ef9931388ba0")
NODE_JSON = {
    "metadata": {"name": "n1", "resourceVersion": "1", "labels": {}},
    "spec": {"providerID": f"aws:///us-east-1a/{INSTANCE}"},
    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
}


@dataclass
class FakeWriter:
    """Applies patches to one in-memory node the way a merge patch would."""

    node: dict = field(
        default_factory=lambda: {
            "metadata": {"name": "n1", "resourceVersion": "1", "labels": {}, "annotations": {}},
            "spec": {},
        }
    )  # type: ignore[type-arg]
    patches: list[dict] = field(default_factory=list)  # type: ignore[type-arg]

    async def mark(self, node: NodeRef, marks: NodeMarks) -> tuple[bool, DrainRecord]:
        patch = patch_for(self.node, marks_for(marks, "spotq.io"))
        after = drain_record_after(self.node, patch, "spotq.io")
        return self._apply(patch), after

    async def claim_drain(self, node: NodeRef, drainer: str, may_claim: Callable[[DrainRecord], bool]) -> DrainRecord:
        patch = claim_patch(self.node, "spotq.io", drainer, may_claim)
        after = drain_record_after(self.node, patch, "spotq.io")
        self._apply(patch)
        return after

    async def record_drain(self, node: NodeRef, state: str) -> None:
        self._apply(patch_for(self.node, Marks(overwrite_annotations={"spotq.io/drain": state})))

    async def release_for(self, node: NodeRef, kind: Kind, notice_id: str) -> bool:
        return self._apply(release_patch_for(self.node, "spotq.io", notice_key("spotq.io", kind), notice_id))

    async def release_if(self, node: NodeRef, may_release: Callable[[tuple[NoticeRecord, ...]], bool]) -> bool:
        return self._apply(release_patch_if(self.node, "spotq.io", may_release))

    def _apply(self, patch: dict | None) -> bool:  # type: ignore[type-arg]
        """As the API server applies a merge patch: null removes."""
        if patch is None:
            return False
        self.patches.append(patch)
        for part in ("labels", "annotations"):
            for key, value in patch["metadata"].get(part, {}).items():
                if value is None:
                    self.node["metadata"][part].pop(key, None)
                else:
                    self.node["metadata"][part][key] = value
        for key, value in patch.get("spec", {}).items():
            if value is None:
                self.node["spec"].pop(key, None)
            else:
                self.node["spec"][key] = value
        return True


@dataclass
class FakeEvents:
    reasons: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    async def node_event(self, node: NodeRef, reason: str, message: str, *, warning: bool = False) -> None:
        self.reasons.append(reason)
        self.messages.append(message)


@dataclass
class FakeLifecycle:
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def complete(self, hook: LifecycleHook) -> None:
        self.calls.append(("complete", hook.token))

    async def heartbeat(self, hook: LifecycleHook) -> None:
        self.calls.append(("heartbeat", hook.token))


def make_actor(
    pods: FakePods, heartbeat: float = 60.0, slots: int = 10, release_slot_when_quiet: bool = False
) -> tuple[acting.Actor, FakeWriter, FakeEvents, FakeLifecycle]:
    index = NodeIndex(selectors.parse(""))
    index.apply(NODE_JSON)
    writer, events, lifecycle = FakeWriter(), FakeEvents(), FakeLifecycle()
    actor = acting.Actor(
        writer=writer,
        pods=pods,
        events=events,
        lifecycle=lifecycle,
        index=index,
        config=acting.ActorConfig(
            "spotq.io",
            DrainOptions(retry_initial_seconds=0.02, settle_seconds=0.1),
            heartbeat,
            release_slot_when_quiet=release_slot_when_quiet,
        ),
        drain_slots=DeadlineSlots(slots),
        evictions=asyncio.Semaphore(10),
    )
    return actor, writer, events, lifecycle


POLICY = planning.Policy.from_settings(Settings())
HOOK = LifecycleHook("asg", "hook", "tok", INSTANCE)


async def act(actor: acting.Actor, notice: SpotInterruption | StateChange | LifecycleTerminate) -> None:
    plan = planning.plan(notice, POLICY, datetime.now(UTC))
    ref = node_ref(NODE_JSON, selectors.parse(""))
    await actor.act(plan, notice, ref, asyncio.get_running_loop().time(), logs.get("test"))


async def test_three_notices_for_one_node_share_one_drain_and_marks_once() -> None:
    NOW = datetime.now(UTC)  # noqa: N806 - per test: a module-level clock goes stale in a long session
    pods = FakePods(delete_delay_seconds=0.3)
    for i in range(3):
        pods.add("n1", f"web-{i}")
    actor, writer, events, lifecycle = make_actor(pods)
    spot = SpotInterruption(
        event_id="a", event_time=NOW, instance_ids=(INSTANCE,), deadline=NOW + timedelta(seconds=120)
    )
    change = StateChange(event_id="b", event_time=NOW, instance_ids=(INSTANCE,), state="stopping")
    hook = LifecycleTerminate(event_id="c", event_time=NOW, instance_ids=(INSTANCE,), hook=HOOK)
    await asyncio.gather(act(actor, spot), act(actor, change), act(actor, hook))
    assert [verb for verb, _, _ in pods.calls].count("list") == 1  # one drain
    assert len([c for c in pods.calls if c[0] == "evict"]) == 3
    # The notice's Event announces the drain, one more closes it.
    assert events.reasons.count("DrainFinished") == 1 and len(events.reasons) == 1 + events.reasons.count(
        "InterruptionNotice"
    )
    assert events.reasons.count("InterruptionNotice") >= 1
    assert writer.node["spec"]["unschedulable"] is True
    assert {t["key"] for t in writer.node["spec"]["taints"]} == {
        "spotq.io/spot-interruption",
        "spotq.io/state-change",
        "spotq.io/lifecycle-terminate",
    }
    assert writer.node["metadata"]["annotations"]["spotq.io/drain"] == "finished"
    assert lifecycle.calls == [("complete", "tok")]  # after the shared drain


async def test_a_drain_that_queued_for_a_slot_says_so_in_its_closing_event() -> None:
    NOW = datetime.now(UTC)  # noqa: N806 - per test: a module-level clock goes stale in a long session
    pods = FakePods()
    pods.add("n1", "web-0")
    actor, _, events, _ = make_actor(pods, slots=1)

    async def occupy() -> None:
        async with actor._drain_slots.hold(asyncio.get_running_loop().time() + 600):
            await asyncio.sleep(drain_runs.SLOT_WAIT_REPORT_SECONDS + 0.1)

    holder = asyncio.create_task(occupy())
    await asyncio.sleep(0)
    spot = SpotInterruption(
        event_id="a", event_time=NOW, instance_ids=(INSTANCE,), deadline=NOW + timedelta(seconds=120)
    )
    await act(actor, spot)
    await holder
    assert events.reasons == ["InterruptionNotice", "DrainFinished"]
    assert "after waiting 1s for a drain slot" in events.messages[-1]


@pytest.mark.parametrize("release", [True, False], ids=["released-when-quiet", "held-to-the-end"])
async def test_a_drain_gives_its_slot_to_the_next_node_once_only_grace_is_left(release: bool) -> None:
    NOW = datetime.now(UTC)  # noqa: N806 - per test: a module-level clock goes stale in a long session
    pods = FakePods(delete_delay_seconds=0.6)  # the pods' grace
    pods.add("n1", "web-0")
    actor, _, events, _ = make_actor(pods, slots=1, release_slot_when_quiet=release)
    loop = asyncio.get_running_loop()
    spot = SpotInterruption(
        event_id="a", event_time=NOW, instance_ids=(INSTANCE,), deadline=NOW + timedelta(seconds=120)
    )
    drain = asyncio.create_task(act(actor, spot))
    async with asyncio.timeout(2):
        while not pods.call_times:  # the eviction was sent: the drain holds the one slot
            await asyncio.sleep(0.01)
    async with asyncio.timeout(3), actor._drain_slots.hold(loop.time() + 600):
        got_slot_while_draining = not drain.done()
    await drain
    assert got_slot_while_draining is release
    assert events.reasons[-1] == "DrainFinished"


async def test_a_repeated_notice_changes_nothing() -> None:
    """A redelivery (or a second notice) for a node already drained: no patch, no pod list or watch, no Event."""
    NOW = datetime.now(UTC)  # noqa: N806 - per test: a module-level clock goes stale in a long session
    pods = FakePods()
    pods.add("n1", "web-0")
    actor, writer, events, _ = make_actor(pods)
    spot = SpotInterruption(
        event_id="a", event_time=NOW, instance_ids=(INSTANCE,), deadline=NOW + timedelta(seconds=120)
    )
    await act(actor, spot)
    before = (len(writer.patches), list(pods.calls), list(events.reasons))
    await act(actor, spot)  # the index has not caught up with spotq's own writes yet
    assert (len(writer.patches), pods.calls, events.reasons) == before


async def test_a_restarted_spotq_reads_what_was_done_from_the_node() -> None:
    """The node's annotations say the drain finished: a new process (no memory of it) does not drain again."""
    NOW = datetime.now(UTC)  # noqa: N806
    pods = FakePods()
    pods.add("n1", "web-0")
    first, writer, _, _ = make_actor(pods)
    spot = SpotInterruption(
        event_id="a", event_time=NOW, instance_ids=(INSTANCE,), deadline=NOW + timedelta(seconds=120)
    )
    await act(first, spot)
    pods.add("n1", "daemon", controller_kind="DaemonSet")
    second, _, events, _ = make_actor(pods)
    second._writer = writer  # the same node
    calls = len(pods.calls)
    current = {**NODE_JSON, **writer.node, "spec": {**NODE_JSON["spec"], **writer.node["spec"]}}
    plan = planning.plan(spot, POLICY, NOW)
    await second.act(
        plan, spot, node_ref(current, selectors.parse("")), asyncio.get_running_loop().time(), logs.get("t")
    )
    assert pods.calls[calls:] == [] and events.reasons == []


async def test_heartbeats_while_a_hooked_node_drains() -> None:
    NOW = datetime.now(UTC)  # noqa: N806 - per test: a module-level clock goes stale in a long session
    pods = FakePods(delete_delay_seconds=0.35)
    pods.add("n1", "web-0")
    actor, _, _, lifecycle = make_actor(pods, heartbeat=0.1)
    await act(actor, LifecycleTerminate(event_id="c", event_time=NOW, instance_ids=(INSTANCE,), hook=HOOK))
    assert lifecycle.calls.count(("heartbeat", "tok")) >= 2
    assert lifecycle.calls[-1] == ("complete", "tok")


async def test_in_a_wave_drains_wait_until_every_node_is_marked() -> None:
    NOW = datetime.now(UTC)  # noqa: N806
    pods = FakePods(delete_delay_seconds=0.0)
    pods.add("n1", "web-0")
    actor, writer, _, _ = make_actor(pods)
    other_mark_done = asyncio.Event()
    original = writer.mark

    async def mark(node: NodeRef, marks: Marks) -> tuple[bool, DrainRecord]:
        if node.name == "n2":
            await other_mark_done.wait()  # another node's taint still on its way
        return await original(node, marks)

    writer.mark = mark  # type: ignore[method-assign]
    spot = SpotInterruption(
        event_id="a", event_time=NOW, instance_ids=(INSTANCE,), deadline=NOW + timedelta(seconds=120)
    )
    plan = planning.plan(spot, POLICY, NOW)
    other = node_ref({**NODE_JSON, "metadata": {**NODE_JSON["metadata"], "name": "n2"}}, selectors.parse(""))
    loop = asyncio.get_running_loop()
    marking_other = asyncio.create_task(actor.act(plan, spot, other, loop.time(), logs.get("test")))
    draining_n1 = asyncio.create_task(act(actor, spot))
    await asyncio.sleep(0.05)
    assert [verb for verb, _, _ in pods.calls] == []  # n1 is marked, but its drain waits for n2's taint
    other_mark_done.set()
    await asyncio.gather(marking_other, draining_n1)
    assert [verb for verb, _, _ in pods.calls][:1] == ["list"]


async def test_a_cancelled_scheduled_change_releases_only_a_node_marked_for_it_alone() -> None:
    now = datetime.now(UTC)
    pods = FakePods()
    actor, writer, events, _ = make_actor(pods)
    policy = planning.Policy.from_settings(Settings(policy={"scheduled_change": "cordon"}))  # type: ignore[arg-type]
    open_ = ScheduledChange(event_id="h1", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(days=3))
    ref = node_ref(NODE_JSON, selectors.parse(""))
    loop = asyncio.get_running_loop()
    await actor.act(planning.plan(open_, policy, now), open_, ref, loop.time(), logs.get("t"))
    assert writer.node["spec"]["unschedulable"] is True
    other = replace(open_, event_id="h2", status="cancelled")
    await actor.act(planning.plan(other, policy, now), other, ref, loop.time(), logs.get("t"))
    assert writer.node["spec"]["unschedulable"] is True  # another event's cancellation changes nothing
    cancelled = replace(open_, status="cancelled")
    await actor.act(planning.plan(cancelled, policy, now), cancelled, ref, loop.time(), logs.get("t"))
    assert "unschedulable" not in writer.node["spec"] and writer.node["spec"]["taints"] == []
    assert not [k for k in writer.node["metadata"]["annotations"] if k.startswith("spotq.io/")]
    assert events.reasons[-1] == "NoticeEnded"
    assert [verb for verb, _, _ in pods.calls] == []  # never drained


async def test_a_cancelled_scheduled_change_keeps_the_marks_of_a_spot_warning() -> None:
    now = datetime.now(UTC)
    actor, writer, _, _ = make_actor(FakePods())
    health = ScheduledChange(event_id="h1", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(days=3))
    spot = SpotInterruption(
        event_id="s1", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(seconds=120)
    )
    await act(actor, spot)
    ref = node_ref(NODE_JSON, selectors.parse(""))
    cancelled = replace(health, status="closed")
    await actor.act(
        planning.plan(cancelled, POLICY, now), cancelled, ref, asyncio.get_running_loop().time(), logs.get("t")
    )
    assert writer.node["spec"]["unschedulable"] is True
    assert {t["key"] for t in writer.node["spec"]["taints"]} == {"spotq.io/spot-interruption"}


async def test_a_joining_notice_with_an_earlier_deadline_brings_the_running_drain_forward() -> None:
    now = datetime.now(UTC)
    pods = FakePods(budgets={"web": 0})  # the budget never allows the eviction: the drain runs to its deadline
    pods.add("n1", "web-0", group="web")
    actor, writer, _, _ = make_actor(pods)
    far = SpotInterruption(
        event_id="a", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(seconds=120)
    )
    first = asyncio.create_task(act(actor, far))
    await asyncio.sleep(0.2)
    assert not first.done()
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Its deadline less the 10 s margin is 1 s away: the shared drain must end then, not 110 s from now.
    near = replace(far, event_id="b", deadline=datetime.now(UTC) + timedelta(seconds=11))
    no_minimum = planning.Policy.from_settings(Settings(drain={"min_window_seconds": 0}))  # type: ignore[arg-type]
    plan = planning.plan(near, no_minimum, datetime.now(UTC))
    async with asyncio.timeout(10):
        await actor.act(plan, near, node_ref(NODE_JSON, selectors.parse("")), loop.time(), logs.get("t"))
        await first
    assert loop.time() - started < 5
    assert writer.node["metadata"]["annotations"]["spotq.io/drain"] == "timed-out"


async def test_a_stopped_spot_instance_that_returns_gets_its_marks_released() -> None:
    now = datetime.now(UTC)
    pods = FakePods()
    actor, writer, events, _ = make_actor(pods)
    stop = SpotInterruption(
        event_id="s1", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(seconds=120), action="stop"
    )
    await act(actor, stop)
    assert '"detail": "stop"' in writer.node["metadata"]["annotations"]["spotq.io/spot-interruption"]
    early = StateChange(event_id="r0", event_time=now - timedelta(seconds=5), instance_ids=(INSTANCE,), state="running")
    await act(actor, early)  # a running event from before the warning, delivered late: nothing changes
    assert writer.node["spec"]["unschedulable"] is True
    back = StateChange(event_id="r1", event_time=now + timedelta(minutes=3), instance_ids=(INSTANCE,), state="running")
    await act(actor, back)
    assert "unschedulable" not in writer.node["spec"] and writer.node["spec"]["taints"] == []
    assert not [k for k in writer.node["metadata"]["annotations"] if k.startswith("spotq.io/")]
    assert not writer.node["metadata"]["labels"]
    assert events.reasons[-1] == "NoticeEnded" and "running again" in events.messages[-1]


async def test_a_returning_instance_keeps_the_marks_of_a_terminate_warning() -> None:
    now = datetime.now(UTC)
    actor, writer, events, _ = make_actor(FakePods())
    await act(actor, StateChange(event_id="st", event_time=now, instance_ids=(INSTANCE,), state="stopping"))
    spot = SpotInterruption(
        event_id="s1", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(seconds=120)
    )
    await act(actor, spot)
    back = StateChange(event_id="r1", event_time=now + timedelta(minutes=3), instance_ids=(INSTANCE,), state="pending")
    patches = len(writer.patches)
    await act(actor, back)
    assert writer.node["spec"]["unschedulable"] is True and len(writer.patches) == patches
    assert "NoticeEnded" not in events.reasons


async def test_a_terminate_warning_after_a_stop_warning_keeps_the_marks_when_the_instance_runs_again() -> None:
    now = datetime.now(UTC)
    actor, writer, events, _ = make_actor(FakePods())
    for action in ("stop", "terminate", "stop"):  # the first of its kind stays on record; a terminate is final
        warning = SpotInterruption(
            event_id=f"s-{action}", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(seconds=120),
            action=action,
        )  # fmt: skip
        await act(actor, warning)
    recorded = writer.node["metadata"]["annotations"]["spotq.io/spot-interruption"]
    assert '"id": "s-stop"' in recorded and '"detail": "terminate"' in recorded
    back = StateChange(event_id="r1", event_time=now + timedelta(minutes=3), instance_ids=(INSTANCE,), state="running")
    await act(actor, back)
    assert writer.node["spec"]["unschedulable"] is True and "NoticeEnded" not in events.reasons


@dataclass
class FakePodEvents:
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (pod uid, reason, message)

    async def pod_event(self, pod: Pod, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((pod.uid, reason, message))


async def test_each_evicted_pod_gets_one_event_naming_the_node_the_notice_and_the_deadline() -> None:
    now = datetime.now(UTC)
    pods = FakePods()
    pods.add("n1", "web-1")
    pods.add("n1", "web-2")
    pods.add("n1", "agent", controller_kind="DaemonSet")
    actor, _, _, _ = make_actor(pods)
    sink = FakePodEvents()
    actor._pod_events = sink
    spot = SpotInterruption(
        event_id="s1", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(seconds=120)
    )
    await act(actor, spot)
    await act(actor, spot)  # a redelivery: the node is drained already
    await asyncio.sleep(0)
    assert sorted(uid for uid, _, _ in sink.events) == ["uid-web-1", "uid-web-2"]
    for _, reason, message in sink.events:
        assert reason == "EvictedBySpotq"
        assert "node n1" in message and "spot_interruption notice s1" in message and "deadline 20" in message


async def test_out_of_service_taint_after_a_complete_drain_and_the_hook_completed_after_its_delay() -> None:
    now = datetime.now(UTC)
    pods = FakePods()
    pods.add("n1", "web-1")
    actor, writer, _, lifecycle = make_actor(pods)
    actor._config = replace(actor._config, complete_delay_seconds=0.3)
    policy = planning.Policy.from_settings(Settings(drain={"out_of_service_taint": True}))  # type: ignore[arg-type]
    notice = LifecycleTerminate(event_id="l1", event_time=now, instance_ids=(INSTANCE,), hook=HOOK)
    ref = node_ref(NODE_JSON, selectors.parse(""))
    loop = asyncio.get_running_loop()
    plan = planning.plan(notice, policy, now)
    drained_at: list[float] = []
    original = actor._out_of_service

    async def timed(*args: object) -> None:
        await original(*args)  # type: ignore[arg-type]
        drained_at.append(loop.time())

    actor._out_of_service = timed  # type: ignore[method-assign]
    await actor.act(plan, notice, ref, loop.time(), logs.get("t"))
    assert {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"} in writer.node[
        "spec"
    ]["taints"]
    assert lifecycle.calls[-1] == ("complete", "tok") and loop.time() - drained_at[0] >= 0.3


async def test_the_completion_delay_never_passes_the_hooks_deadline() -> None:
    now = datetime.now(UTC)
    actor, _, _, lifecycle = make_actor(FakePods())
    actor._config = replace(actor._config, complete_delay_seconds=3600)
    notice = LifecycleTerminate(event_id="l1", event_time=now, instance_ids=(INSTANCE,), hook=HOOK)
    plan = replace(planning.plan(notice, POLICY, now), deadline=now + timedelta(seconds=0.3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        await actor.act(plan, notice, node_ref(NODE_JSON, selectors.parse("")), started, logs.get("t"))
    assert lifecycle.calls[-1] == ("complete", "tok") and loop.time() - started < 2


@dataclass
class FakeVolumes:
    detached: asyncio.Event = field(default_factory=asyncio.Event)
    asked: list[str] = field(default_factory=list)

    async def wait_detached(self, node: str) -> bool:
        self.asked.append(node)
        await self.detached.wait()
        return True


async def test_a_terminate_hook_waits_for_its_nodes_volumes_within_its_deadline() -> None:
    now = datetime.now(UTC)
    actor, _, _, lifecycle = make_actor(FakePods())
    volumes = FakeVolumes()
    actor._volumes = volumes
    notice = LifecycleTerminate(event_id="l1", event_time=now, instance_ids=(INSTANCE,), hook=HOOK)
    ref = node_ref(NODE_JSON, selectors.parse(""))
    loop = asyncio.get_running_loop()
    acting_task = asyncio.create_task(
        actor.act(planning.plan(notice, POLICY, now), notice, ref, loop.time(), logs.get("t"))
    )
    async with asyncio.timeout(5):
        while not volumes.asked:
            await asyncio.sleep(0.01)
    assert ("complete", "tok") not in lifecycle.calls  # drained, volumes still attached
    volumes.detached.set()
    await acting_task
    assert volumes.asked == ["n1"] and lifecycle.calls[-1] == ("complete", "tok")
    # Volumes that never go: completed at the deadline.
    stuck = FakeVolumes()
    actor._volumes = stuck
    soon = replace(planning.plan(notice, POLICY, now), deadline=datetime.now(UTC) + timedelta(seconds=0.5))
    async with asyncio.timeout(5):
        await actor.act(soon, replace(notice, event_id="l2"), ref, loop.time(), logs.get("t"))
    assert stuck.asked == ["n1"] and lifecycle.calls.count(("complete", "tok")) == 2


async def test_the_drain_deadline_is_measured_from_the_notices_receipt_not_from_the_wall_clock_at_the_drain() -> None:
    from spotq import clock

    pods = FakePods()
    pods.add("n1", "web-1")
    actor, _, _, _ = make_actor(pods)
    loop = asyncio.get_running_loop()
    # Received a moment ago; the wall clock has stepped an hour forward since (NTP): the plan's deadline, an hour
    # behind the wall clock now, is still 2 s after the receipt.
    received = clock.Instant(datetime.now(UTC) - timedelta(hours=1), loop.time())
    notice = SpotInterruption(event_id="s1", event_time=received.wall, instance_ids=(INSTANCE,))
    plan = replace(planning.plan(notice, POLICY, received.wall), deadline=received.wall + timedelta(seconds=2))
    report = await actor.act(plan, notice, node_ref(NODE_JSON, selectors.parse("")), received, logs.get("t"))
    assert report is not None and report.complete and report.evicted == ["ns/web-1"]


async def test_spotqs_own_pod_is_evicted_last_once_its_node_is_drained() -> None:
    NOW = datetime.now(UTC)  # noqa: N806 - per test: a module-level clock goes stale in a long session
    pods = FakePods(delete_delay_seconds=0.2)
    pods.add("n1", "web-0")
    pods.add("n1", "spotq-abc", controller_kind="ReplicaSet")
    actor, _, events, _ = make_actor(pods)
    protect = dataclasses.replace(actor._config.drain, protected=frozenset({"ns/spotq-abc"}))
    actor._config = dataclasses.replace(actor._config, drain=protect, evict_own_pod=True)
    spot = SpotInterruption(
        event_id="a", event_time=NOW, instance_ids=(INSTANCE,), deadline=NOW + timedelta(seconds=120)
    )
    await act(actor, spot)
    evictions = [name for verb, name, _ in pods.calls if verb == "evict"]
    assert evictions == ["web-0", "spotq-abc"]  # the drain never evicts it; leaving does, after the others went
    assert pods.call_times[1] >= pods.call_times[0] + 0.2
    assert "SpotqRescheduled" in events.reasons


async def test_spotqs_own_pod_stays_when_leaving_is_off_or_it_is_a_daemonset_pod() -> None:
    NOW = datetime.now(UTC)  # noqa: N806
    for evict_own, kind in ((False, "ReplicaSet"), (True, "DaemonSet")):
        pods = FakePods()
        pods.add("n1", "web-0")
        pods.add("n1", "spotq-abc", controller_kind=kind)
        actor, _, _, _ = make_actor(pods)
        protect = dataclasses.replace(actor._config.drain, protected=frozenset({"ns/spotq-abc"}))
        actor._config = dataclasses.replace(actor._config, drain=protect, evict_own_pod=evict_own)
        spot = SpotInterruption(
            event_id="a", event_time=NOW, instance_ids=(INSTANCE,), deadline=NOW + timedelta(seconds=120)
        )
        await act(actor, spot)
        assert [name for verb, name, _ in pods.calls if verb == "evict"] == ["web-0"]
