"""One delivery through the handler: which notices reach acting, and the outcome that decides the message's fate."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spotq import clock, handling, planning, plans, selectors
from spotq.acknowledging import Outcome
from spotq.aws.ec2 import InstanceInfo
from spotq.kube.nodes import NodeIndex, NodeRef
from spotq.notices import Delivery, InstanceId, Notice
from spotq.resolving import Resolver
from spotq.settings import Settings

EVENTS = Path(__file__).parent.parent / "data/events"
HOOK_INSTANCE = "i-0633ac2b0d9769723"


def node_json(name: str, instance: str, labels: dict[str, str] | None = None, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1", "labels": labels or {}},
        "spec": {"providerID": f"aws:///us-east-1a/{instance}"},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


@dataclass
class RecordingActor:
    """Records what the handler asks acting to do (the real Actor is tested in test_acting)."""

    acted: list[tuple[list[str], str | None]] = field(default_factory=list)

    async def act(self, plan: plans.Plan, notice: Notice, node: NodeRef | None, received: float, log: Any) -> None:
        self.acted.append((plan.step_names, node.name if node else None))


@dataclass
class FakeDescriber:
    known: dict[str, InstanceInfo] = field(default_factory=dict)

    async def describe(self, instance_id: InstanceId) -> InstanceInfo | None:
        return self.known.get(instance_id)


def make_handler(
    index: NodeIndex, settings: Settings | None = None, describer: FakeDescriber | None = None
) -> tuple[handling.Handler, RecordingActor]:
    settings = settings or Settings()
    actor = RecordingActor()
    handler = handling.Handler(
        resolver=Resolver(index, describer or FakeDescriber(), settings.kube.instance_tag),
        actor=actor,  # type: ignore[arg-type]
        policy=planning.Policy.from_settings(settings),
        unknown_instance_fate=settings.queue.unknown_instance_fate,
        dry_run=False,
    )
    return handler, actor


def synced_index(*nodes: dict[str, Any], selector: str = "") -> NodeIndex:
    index = NodeIndex(selectors.parse(selector))
    for node in nodes:
        index.apply(node)
    index.synced.set()
    return index


def hook_body(instance: str = HOOK_INSTANCE, group: str | None = None) -> str:
    doc = json.loads((EVENTS / "eventbridge/lifecycle-terminate.json").read_text())
    doc["detail"]["EC2InstanceId"] = instance
    if group is not None:
        doc["detail"]["AutoScalingGroupName"] = group
    return json.dumps(doc)


async def handle(handler: handling.Handler, body: str) -> Outcome:
    _, outcome = await handler.handle(Delivery("m1", body, "r1"))
    return outcome


async def test_terminate_hook_for_an_instance_that_is_no_node_of_ours_is_left_alone() -> None:
    handler, actor = make_handler(synced_index(node_json("n1", "i-0123456789abcdef0")))
    assert await handle(handler, hook_body()) is Outcome.UNKNOWN_INSTANCE
    assert actor.acted == []  # no CompleteLifecycleAction for another cluster's hook


async def test_terminate_hook_for_a_node_out_of_scope_is_left_alone() -> None:
    index = synced_index(node_json("n1", HOOK_INSTANCE, labels={"pool": "on-demand"}), selector="pool=spot")
    handler, actor = make_handler(index, Settings(kube={"node_selector": "pool=spot"}))  # type: ignore[arg-type]
    assert await handle(handler, hook_body()) is Outcome.OUT_OF_SCOPE
    assert actor.acted == []


async def test_terminate_hook_for_an_instance_without_the_tag_is_left_alone() -> None:
    describer = FakeDescriber({HOOK_INSTANCE: InstanceInfo(InstanceId(HOOK_INSTANCE), "ip-10-0-0-1", {})})
    settings = Settings(kube={"instance_tag": "cluster=ours"})  # type: ignore[arg-type]
    handler, actor = make_handler(synced_index(), settings, describer)
    assert await handle(handler, hook_body()) is Outcome.UNKNOWN_INSTANCE
    assert actor.acted == []


async def test_terminate_hook_from_a_group_outside_the_allow_list_is_left_alone() -> None:
    settings = Settings(policy={"lifecycle_groups": "eks-spot-*,batch-pool"})  # type: ignore[arg-type]
    index = synced_index(node_json("n1", HOOK_INSTANCE))
    handler, actor = make_handler(index, settings)
    assert await handle(handler, hook_body(group="other-cluster-asg")) is Outcome.OUT_OF_SCOPE
    assert actor.acted == []
    assert await handle(handler, hook_body(group="eks-spot-2024")) is Outcome.DONE
    assert await handle(handler, hook_body(group="batch-pool")) is Outcome.DONE
    assert [steps[-1] for steps, _ in actor.acted] == ["complete_lifecycle", "complete_lifecycle"]


async def test_terminate_hook_for_our_node_is_drained_then_completed() -> None:
    handler, actor = make_handler(synced_index(node_json("n1", HOOK_INSTANCE)))
    assert await handle(handler, hook_body()) is Outcome.DONE
    assert actor.acted == [
        (["event", "taint", "cordon", "exclude_from_load_balancers", "drain", "complete_lifecycle"], "n1")
    ]


def launch_body(instance: str) -> str:
    doc = json.loads((EVENTS / "eventbridge/lifecycle-terminate.json").read_text())
    doc["detail-type"] = "EC2 Instance-launch Lifecycle Action"
    doc["detail"]["LifecycleTransition"] = "autoscaling:EC2_INSTANCE_LAUNCHING"
    doc["detail"]["EC2InstanceId"] = instance
    doc["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # a hook's timeout counts from its event
    return json.dumps(doc)


async def test_launch_hook_waits_in_flight_for_its_node_to_join() -> None:
    index = synced_index()
    settings = Settings(policy={"complete_lifecycle_launch": True})  # type: ignore[arg-type]
    handler, actor = make_handler(index, settings)
    task = asyncio.create_task(handle(handler, launch_body(HOOK_INSTANCE)))
    await asyncio.sleep(0.05)
    assert not task.done()  # not handed back to the queue (each redelivery brings it closer to the DLQ)
    index.apply(node_json("new-node", HOOK_INSTANCE, ready=False))
    await index._notify()
    async with asyncio.timeout(2):
        assert await task is Outcome.DONE
    assert actor.acted == [(["complete_lifecycle"], "new-node")]


async def test_launch_hook_whose_node_never_joins_is_given_up_at_its_limit() -> None:
    settings = Settings(policy={"complete_lifecycle_launch": True, "launch_wait_seconds": 0.2})  # type: ignore[arg-type]
    handler, actor = make_handler(synced_index(), settings)
    async with asyncio.timeout(2):
        assert await handle(handler, launch_body(HOOK_INSTANCE)) is Outcome.FAILED
    assert actor.acted == []


async def test_a_wall_clock_step_after_receipt_does_not_cut_a_launch_wait_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = launch_body(HOOK_INSTANCE)
    received = datetime.now(UTC)
    readings = iter([received])  # read at receipt; every later reading a day on (the clock was stepped)
    monkeypatch.setattr(clock, "now", lambda: next(readings, received + timedelta(days=1)))
    index = synced_index()
    handler, actor = make_handler(index, Settings(policy={"complete_lifecycle_launch": True}))  # type: ignore[arg-type]
    task = asyncio.create_task(handle(handler, body))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()  # the wait is measured on the loop clock from the receipt, not from a later reading
    index.apply(node_json("new-node", HOOK_INSTANCE))
    await index._notify()
    async with asyncio.timeout(2):
        assert await task is Outcome.DONE
    assert actor.acted == [(["complete_lifecycle"], "new-node")]
