"""SPOTQ_DRAIN__OUT_OF_SERVICE_TAINT against the real API server: a node drained for a terminate warning gets the
node.kubernetes.io/out-of-service taint after its pods have gone; a node drained for a stop warning does not."""

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
OUT_OF_SERVICE = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}


def warning(instance_id: str, action: str) -> str:
    return json.dumps(
        {"version": "0", "id": f"e-{action}-{instance_id}", "detail-type": "EC2 Spot Instance Interruption Warning",
         "source": "aws.ec2", "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "detail": {"instance-id": instance_id, "instance-action": action}}
    )  # fmt: skip


def test_a_node_drained_for_its_termination_is_tainted_out_of_service(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    going, stopping = local_cluster.create_spot_nodes(2)
    local_cluster.wait_nodes_ready([going.node_name, stopping.node_name])
    bind(local_cluster, namespace, going.node_name, "web-0")
    bind(local_cluster, namespace, stopping.node_name, "web-1")
    sqs = moto.client("sqs")
    with SpotqProcess({**spotq_env, "SPOTQ_DRAIN__OUT_OF_SERVICE_TAINT": "true"}, log_path=tmp_path / "spotq.log"):
        sqs.send_message(QueueUrl=queue, MessageBody=warning(going.instance_id, "terminate"))
        sqs.send_message(QueueUrl=queue, MessageBody=warning(stopping.instance_id, "stop"))

        def drained(name: str) -> bool:
            node = local_cluster.get_node(name) or {}
            return (node["metadata"].get("annotations") or {}).get("spotq.io/drain") == "finished"

        wait_until(
            "both drained",
            lambda: drained(going.node_name) and drained(stopping.node_name) and queue_depth(moto, queue) == 0,
            timeout=60,
        )
        wait_until(
            "the terminated node out of service",
            lambda: OUT_OF_SERVICE in ((local_cluster.get_node(going.node_name) or {})["spec"].get("taints") or []),
            timeout=15,
        )
    assert local_cluster.client.get_or_none(f"/api/v1/namespaces/{namespace}/pods/web-0") is None
    kept = local_cluster.get_node(stopping.node_name) or {}
    assert OUT_OF_SERVICE not in (kept["spec"].get("taints") or [])
