"""`spotq release`: a node that was not reclaimed after all gets back exactly what spotq took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess

from .helpers import queue_depth, wait_until

pytestmark = pytest.mark.integration
LB = "node.kubernetes.io/exclude-from-external-load-balancers"


def warning(instance_id: str) -> str:
    return json.dumps(
        {"version": "0", "id": f"e-{instance_id}", "detail-type": "EC2 Spot Instance Interruption Warning",
         "source": "aws.ec2", "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "detail": {"instance-id": instance_id, "instance-action": "terminate"}}
    )  # fmt: skip


def release(cluster: LocalCluster, *nodes: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPOTQ_KUBE__KUBECONFIG": str(cluster.kubeconfig_path)}
    return subprocess.run(
        [sys.executable, "-m", "spotq", "release", *nodes], env=env, capture_output=True, text=True, timeout=60
    )


def test_release_gives_back_what_spotq_took_and_nothing_else(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    ours, operators = local_cluster.create_spot_nodes(2)
    local_cluster.wait_nodes_ready([ours.node_name, operators.node_name])
    local_cluster.cordon(operators.node_name)  # cordoned by a person before the warning
    with SpotqProcess(spotq_env, log_path=tmp_path / "spotq.log"):
        for victim in (ours, operators):
            moto.client("sqs").send_message(QueueUrl=queue, MessageBody=warning(victim.instance_id))
        wait_until("both handled", lambda: queue_depth(moto, queue) == 0, timeout=60)
    for name in (ours.node_name, operators.node_name):
        node = local_cluster.get_node(name)
        assert node is not None and node["spec"].get("unschedulable")
        assert any(t["key"] == "spotq.io/spot-interruption" for t in node["spec"]["taints"])

    result = release(local_cluster, ours.node_name, operators.node_name, "ip-10-9-9-9.ec2.internal")
    assert result.returncode == 1  # the unknown node
    assert f"{ours.node_name}: released" in result.stdout
    assert "ip-10-9-9-9.ec2.internal: not released: no such node" in result.stdout

    ours_now = local_cluster.get_node(ours.node_name)
    operators_now = local_cluster.get_node(operators.node_name)
    assert ours_now is not None and operators_now is not None
    assert not ours_now["spec"].get("unschedulable")
    assert operators_now["spec"].get("unschedulable")  # the person's cordon stays
    for node in (ours_now, operators_now):
        assert not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("spotq.io/")]
        assert not [k for k in node["metadata"].get("annotations") or {} if k.startswith("spotq.io/")]
        assert LB not in (node["metadata"].get("labels") or {})
    again = release(local_cluster, ours.node_name)
    assert again.returncode == 0 and "carried no spotq marks" in again.stdout


def rebalance(instance_id: str) -> str:
    return json.dumps(
        {"version": "0", "id": f"r-{instance_id}", "detail-type": "EC2 Instance Rebalance Recommendation",
         "source": "aws.ec2", "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "detail": {"instance-id": instance_id}}
    )  # fmt: skip


def test_a_rebalance_recommendation_no_interruption_followed_is_released_after_its_expiry(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    quiet, reclaimed = local_cluster.create_spot_nodes(2)
    local_cluster.wait_nodes_ready([quiet.node_name, reclaimed.node_name])
    env = {
        **spotq_env,
        "SPOTQ_POLICY__REBALANCE_RECOMMENDATION": "cordon",  # the level that used to leave nodes cordoned for good
        "SPOTQ_POLICY__REBALANCE_EXPIRY_SECONDS": "6",
    }
    sqs = moto.client("sqs")
    with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:
        for node in (quiet, reclaimed):
            sqs.send_message(QueueUrl=queue, MessageBody=rebalance(node.instance_id))
        wait_until(
            "both cordoned",
            lambda: all((local_cluster.get_node(n.node_name) or {})["spec"].get("unschedulable") for n in (quiet, reclaimed)),
            timeout=30,
        )  # fmt: skip
        sqs.send_message(QueueUrl=queue, MessageBody=warning(reclaimed.instance_id))  # this one is reclaimed after all
        wait_until(
            "the quiet node released",
            lambda: not (local_cluster.get_node(quiet.node_name) or {})["spec"].get("unschedulable"),
            timeout=30,
        )
        assert spotq.metric("spotq_marks_expired_total", result="released") == 1
    node = local_cluster.get_node(quiet.node_name)
    assert node is not None
    assert not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("spotq.io/")]
    assert not [k for k in node["metadata"].get("annotations") or {} if k.startswith("spotq.io/")]
    assert LB not in (node["metadata"].get("labels") or {})
    events = local_cluster.client.list_items(
        "/api/v1/events", fieldSelector=f"involvedObject.uid={node['metadata']['uid']}"
    )
    assert "RebalanceExpired" in {e["reason"] for e in events}
    # The node whose warning followed keeps every mark.
    kept = local_cluster.get_node(reclaimed.node_name)
    assert kept is not None and kept["spec"].get("unschedulable")
    assert {t["key"] for t in kept["spec"]["taints"]} >= {"spotq.io/spot-interruption"}
