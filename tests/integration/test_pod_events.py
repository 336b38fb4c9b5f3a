"""Each pod a drain evicts gets exactly one EvictedBySpotq Event (`kubectl describe pod` says why it moved), read
from the real API server by the pod's UID."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess

from .helpers import queue_depth, wait_until
from .test_drain_order import bind

pytestmark = pytest.mark.integration


def test_each_evicted_pod_gets_one_event_saying_why_it_moved(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    victim = local_cluster.create_spot_nodes(1)[0]
    local_cluster.wait_nodes_ready([victim.node_name])
    names = [f"web-{i}" for i in range(3)]
    for name in names:
        bind(local_cluster, namespace, victim.node_name, name)
    uids = {
        name: local_cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/{name}")["metadata"]["uid"]
        for name in names
    }
    body = json.dumps(
        {"version": "0", "id": "e-pod-events", "detail-type": "EC2 Spot Instance Interruption Warning",
         "source": "aws.ec2", "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "detail": {"instance-id": victim.instance_id, "instance-action": "terminate"}}
    )  # fmt: skip
    sqs = moto.client("sqs")
    with SpotqProcess(spotq_env, log_path=tmp_path / "spotq.log"):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
        sqs.send_message(QueueUrl=queue, MessageBody=body)  # a duplicate delivery: still one Event per pod

        def drained() -> bool:
            node = local_cluster.get_node(victim.node_name) or {}
            return (node["metadata"].get("annotations") or {}).get("spotq.io/drain") == "finished"

        wait_until("the node drained", lambda: drained() and queue_depth(moto, queue) == 0, timeout=60)

        def events_of(uid: str) -> list[dict]:  # type: ignore[type-arg]
            found = local_cluster.client.list_items(
                f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.uid={uid}"
            )
            return [e for e in found if e["reason"] == "EvictedBySpotq"]

        wait_until("an Event on every pod", lambda: all(events_of(uid) for uid in uids.values()), timeout=30)
    for name, uid in uids.items():
        (event,) = events_of(uid)
        assert event["involvedObject"]["name"] == name and event["involvedObject"]["kind"] == "Pod"
        assert victim.node_name in event["message"] and "spot_interruption notice e-pod-events" in event["message"]
        assert "deadline" in event["message"] and event["source"]["component"] == "spotq"
