"""Drains a stopped spotq left unfinished resume from the nodes' own records as soon as the index syncs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from spotq import planning, resuming, selectors
from spotq.kube.nodes import node_ref
from spotq.notices import InstanceId, SpotInterruption
from spotq.observability import logs
from spotq.settings import Settings
from tests.fakes import FakePods
from tests.unit.test_acting import make_actor

INSTANCE = InstanceId("i-0b662ef9931388ba0")


def node_with(
    drain: str | None, deadline: datetime, name: str = "n1", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    annotations = {"spotq.io/spot-interruption": json.dumps({"id": "e1", "deadline": deadline.isoformat()})}
    if drain is not None:
        annotations["spotq.io/drain"] = drain
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "labels": labels or {},
            "annotations": annotations,
        },
        "spec": {"providerID": f"aws:///us-east-1a/{INSTANCE}", "unschedulable": True},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


async def resume_with(pods: FakePods, *nodes: dict[str, Any], selector: str = "") -> None:
    actor, _, _, _ = make_actor(pods)
    index = actor._index
    index._selector = selectors.parse(selector)
    for node in nodes:
        index.apply(node)
    index.synced.set()
    async with asyncio.timeout(10):
        await resuming.resume_unfinished(index, actor)


async def test_an_unfinished_drain_is_resumed_from_the_node_record() -> None:
    pods = FakePods()
    pods.add("n1", "web-0")
    pods.add("n1", "web-1")
    await resume_with(pods, node_with("started", datetime.now(UTC) + timedelta(seconds=60)))
    assert sorted(pods.evictions_of("web-0") + pods.evictions_of("web-1"), key=str) == [None, None]
    assert not [p for node, p, _ in pods.pods.values() if node == "n1"]


async def test_finished_expired_and_out_of_scope_drains_are_left_alone() -> None:
    pods = FakePods()
    for node in ("done", "late", "other", "never"):
        pods.add(node, f"web-{node}")
    soon = datetime.now(UTC) + timedelta(seconds=60)
    await resume_with(
        pods,
        node_with("finished", soon, name="done"),
        node_with("started", datetime.now(UTC) - timedelta(seconds=1), name="late"),
        node_with("started", soon, name="other", labels={"pool": "on-demand"}),
        node_with(None, soon, name="never"),
        selector="pool!=on-demand",
    )
    assert [verb for verb, _, _ in pods.calls] == []


async def test_the_returning_message_joins_the_resumed_drain() -> None:
    pods = FakePods(delete_delay_seconds=0.3)
    pods.add("n1", "web-0")
    actor, _, _, _ = make_actor(pods)
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    node = node_with("started", deadline)
    actor._index.apply(node)
    actor._index.synced.set()
    resumed = asyncio.create_task(resuming.resume_unfinished(actor._index, actor))
    await asyncio.sleep(0.05)
    now = datetime.now(UTC)
    spot = SpotInterruption(
        event_id="e1", event_time=now, instance_ids=(INSTANCE,), deadline=now + timedelta(seconds=120)
    )
    plan = planning.plan(spot, planning.Policy.from_settings(Settings()), now)
    await actor.act(plan, spot, node_ref(node, selectors.parse("")), asyncio.get_running_loop().time(), logs.get("t"))
    await resumed
    assert [verb for verb, _, _ in pods.calls].count("list") == 1  # one drain
