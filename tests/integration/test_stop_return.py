"""A stopped or hibernated Spot instance that comes back gets spotq's marks released, against the real API server:
only where every notice on record meant that stop, and only for a running event later than them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess

from .helpers import queue_depth, wait_until

pytestmark = pytest.mark.integration


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def spot_warning(instance_id: str, action: str, when: datetime) -> str:
    return json.dumps(
        {"version": "0", "id": f"w-{action}-{instance_id}", "detail-type": "EC2 Spot Instance Interruption Warning",
         "source": "aws.ec2", "time": _stamp(when), "detail": {"instance-id": instance_id, "instance-action": action}}
    )  # fmt: skip


def state_change(instance_id: str, state: str, when: datetime) -> str:
    return json.dumps(
        {"version": "0", "id": f"s-{state}-{instance_id}", "detail-type": "EC2 Instance State-change Notification",
         "source": "aws.ec2", "time": _stamp(when), "detail": {"instance-id": instance_id, "state": state}}
    )  # fmt: skip


def spotq_marks(node: dict) -> tuple[list[str], list[str], bool]:  # type: ignore[type-arg]
    taints = [t["key"] for t in node["spec"].get("taints") or [] if t["key"].startswith("spotq.io/")]
    annotations = [k for k in node["metadata"].get("annotations") or {} if k.startswith("spotq.io/")]
    return taints, annotations, bool(node["spec"].get("unschedulable"))


def test_a_stopped_spot_instance_that_returns_gets_its_marks_released(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    returned, terminated, reordered = local_cluster.create_spot_nodes(3)
    names = [n.node_name for n in (returned, terminated, reordered)]
    local_cluster.wait_nodes_ready(names)
    sqs = moto.client("sqs")
    start = datetime.now(UTC)
    with SpotqProcess(spotq_env, log_path=tmp_path / "spotq.log"):
        sqs.send_message(QueueUrl=queue, MessageBody=spot_warning(returned.instance_id, "stop", start))
        sqs.send_message(QueueUrl=queue, MessageBody=spot_warning(terminated.instance_id, "stop", start))
        sqs.send_message(QueueUrl=queue, MessageBody=spot_warning(terminated.instance_id, "terminate", start))
        sqs.send_message(QueueUrl=queue, MessageBody=spot_warning(reordered.instance_id, "hibernate", start))
        wait_until(
            "all three marked and drained",
            lambda: queue_depth(moto, queue) == 0
            and all((local_cluster.get_node(n) or {})["metadata"].get("annotations", {}).get("spotq.io/drain") for n in names),
            timeout=60,
        )  # fmt: skip
        for name in names:
            assert spotq_marks(local_cluster.get_node(name) or {})[2]  # cordoned
        back = datetime.now(UTC) + timedelta(seconds=2)  # event times have whole seconds: later than noticed_at
        sqs.send_message(QueueUrl=queue, MessageBody=state_change(returned.instance_id, "running", back))
        sqs.send_message(QueueUrl=queue, MessageBody=state_change(terminated.instance_id, "running", back))
        # A running event from before the hibernation, delivered late.
        early = start - timedelta(seconds=30)
        sqs.send_message(QueueUrl=queue, MessageBody=state_change(reordered.instance_id, "running", early))
        wait_until(
            "the returned node released",
            lambda: spotq_marks(local_cluster.get_node(returned.node_name) or {}) == ([], [], False),
            timeout=30,
        )
        wait_until("every message handled", lambda: queue_depth(moto, queue) == 0, timeout=30)
    node = local_cluster.get_node(returned.node_name)
    assert node is not None
    assert "node.kubernetes.io/exclude-from-external-load-balancers" not in (node["metadata"].get("labels") or {})
    events = local_cluster.client.list_items(
        "/api/v1/events", fieldSelector=f"involvedObject.uid={node['metadata']['uid']}"
    )
    assert "NoticeEnded" in {e["reason"] for e in events}
    for kept in (terminated.node_name, reordered.node_name):
        taints, annotations, cordoned = spotq_marks(local_cluster.get_node(kept) or {})
        assert cordoned and "spotq.io/spot-interruption" in taints and "spotq.io/spot-interruption" in annotations
