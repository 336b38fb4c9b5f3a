"""Instance → node the hard ways: the EC2 fallback, scoping by label and tag, and a launch hook for a new node."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess
from testenv.workloads import node_manifest

from .helpers import queue_depth, wait_until

pytestmark = pytest.mark.integration


def spot_body(instance_id: str) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": f"e-{instance_id}",
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "detail": {"instance-id": instance_id, "instance-action": "terminate"},
        }
    )


def cordoned(cluster: LocalCluster, name: str) -> bool:
    node = cluster.get_node(name)
    return bool(node and node["spec"].get("unschedulable"))


def test_index_miss_falls_back_to_describe_instances(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    ec2 = moto.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.large")["Instances"][0]
    dns_name = instance["PrivateDnsName"]
    # A node registered under the instance's private DNS name but without a providerID (e.g. a self-managed node).
    manifest = node_manifest(dns_name, instance["InstanceId"])
    manifest["spec"].pop("providerID")
    local_cluster.client.create("/api/v1/nodes", manifest)
    try:
        local_cluster.wait_nodes_ready([dns_name])
        with SpotqProcess(spotq_env, log_path=tmp_path / "spotq.log") as spotq:
            moto.client("sqs").send_message(QueueUrl=queue, MessageBody=spot_body(instance["InstanceId"]))
            wait_until("node found through EC2 and cordoned", lambda: cordoned(local_cluster, dns_name), timeout=30)
            wait_until("message deleted", lambda: queue_depth(moto, queue) == 0, timeout=30)
            assert spotq.metric("spotq_messages_finished_total", outcome="done") == 1
    finally:
        local_cluster.delete_nodes([dns_name])


def test_nodes_outside_the_selector_and_tag_are_left_alone(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    spot = local_cluster.create_spot_nodes(1)[0]
    on_demand = local_cluster.create_on_demand_nodes(1)[0]
    local_cluster.wait_nodes_ready([spot.node_name, on_demand.node_name])
    env = {**spotq_env, "SPOTQ_KUBE__NODE_SELECTOR": "lifecycle=Ec2Spot"}
    with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:
        sqs = moto.client("sqs")
        sqs.send_message(QueueUrl=queue, MessageBody=spot_body(on_demand.instance_id))
        sqs.send_message(QueueUrl=queue, MessageBody=spot_body(spot.instance_id))
        wait_until("both settled", lambda: queue_depth(moto, queue) == 0, timeout=30)
        assert cordoned(local_cluster, spot.node_name)
        assert not cordoned(local_cluster, on_demand.node_name)
        assert spotq.metric("spotq_messages_finished_total", outcome="out_of_scope") == 1


def test_instance_tag_scoping_uses_ec2_tags(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    ec2 = moto.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    tagged, untagged = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2)["Instances"]
    ec2.create_tags(Resources=[tagged["InstanceId"]], Tags=[{"Key": "k8s.io/cluster/demo", "Value": "owned"}])
    names = []
    for instance in (tagged, untagged):
        manifest = node_manifest(instance["PrivateDnsName"], instance["InstanceId"])
        local_cluster.client.create("/api/v1/nodes", manifest)
        names.append(instance["PrivateDnsName"])
    try:
        local_cluster.wait_nodes_ready(names)
        env = {**spotq_env, "SPOTQ_KUBE__INSTANCE_TAG": "k8s.io/cluster/demo=owned"}
        with SpotqProcess(env, log_path=tmp_path / "spotq.log"):
            sqs = moto.client("sqs")
            for instance in (tagged, untagged):
                sqs.send_message(QueueUrl=queue, MessageBody=spot_body(instance["InstanceId"]))
            wait_until("both settled", lambda: queue_depth(moto, queue) == 0, timeout=30)
        assert cordoned(local_cluster, names[0])
        assert not cordoned(local_cluster, names[1])
    finally:
        local_cluster.delete_nodes(names)


def test_launch_hook_is_held_while_its_node_joins_and_never_dead_lettered(
    local_cluster: LocalCluster, moto: MotoServer, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    """With the stack's redrive policy (5 receives, then the DLQ), a launch hook whose node takes longer to join
    than five retries used to end in the DLQ: it is now held in flight (visibility extended) until the node is
    Ready, then completed."""
    sqs = moto.client("sqs")
    dlq = sqs.create_queue(QueueName="spotq-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    queue = sqs.create_queue(
        QueueName="spotq-redriven", Attributes={"MessageRetentionPeriod": "300", "RedrivePolicy": redrive}
    )["QueueUrl"]
    instance_id = "i-0123456789abcdef0"
    body = json.dumps(
        {
            "Service": "AWS Auto Scaling",
            "Time": datetime.now(UTC).isoformat(),
            "RequestId": "r-1",
            "AutoScalingGroupName": "spot-workers",
            "LifecycleHookName": "launch-hook",
            "LifecycleActionToken": "6d2b7f4e-0c55-4f7a-9a3e-2f1d0f8b9c01",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "EC2InstanceId": instance_id,
        }
    )
    env = {
        **spotq_env,
        "SPOTQ_QUEUE__URL": queue,
        "SPOTQ_POLICY__COMPLETE_LIFECYCLE_LAUNCH": "true",
        # Short visibility: five redeliveries would take ~10 s if the message were handed back.
        "SPOTQ_QUEUE__VISIBILITY_TIMEOUT_SECONDS": "10",
    }
    with SpotqProcess(env, log_path=tmp_path / "spotq.log"):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
        wait_until("message received", lambda: _attribute(sqs, queue, "ApproximateNumberOfMessagesNotVisible") == 1)
        time.sleep(25)  # the node joins late: longer than five visibility timeouts
        assert _attribute(sqs, dlq, "ApproximateNumberOfMessages") == 0
        assert _attribute(sqs, queue, "ApproximateNumberOfMessagesNotVisible") == 1  # held, not handed back
        assert moto.completed_lifecycle_actions() == []
        name = "ip-10-0-200-9.ec2.internal"
        local_cluster.client.create("/api/v1/nodes", node_manifest(name, instance_id))
        try:
            wait_until("hook completed", lambda: moto.completed_lifecycle_actions(), timeout=45)
            (call,) = moto.completed_lifecycle_actions()
            assert (call.instance_id, call.lifecycle_action_token, call.lifecycle_action_result) == (
                instance_id,
                "6d2b7f4e-0c55-4f7a-9a3e-2f1d0f8b9c01",
                "CONTINUE",
            )
            node = local_cluster.get_node(name)
            assert node is not None and any(
                c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
            )
            wait_until("message deleted", lambda: queue_depth(moto, queue) == 0, timeout=30)
            assert _attribute(sqs, dlq, "ApproximateNumberOfMessages") == 0
        finally:
            local_cluster.delete_nodes([name])


def _attribute(sqs: Any, url: str, name: str) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[name])["Attributes"][name])


def test_terminate_hook_of_another_cluster_is_never_completed(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    """The stack's terminate rule matches every group in the account: a hook for an instance that is no node of
    this cluster must wait for its own handler, not get CONTINUE from spotq."""
    body = (Path(__file__).parent.parent / "data/events/autoscaling-direct/lifecycle-terminate.json").read_text()
    with SpotqProcess(spotq_env, log_path=tmp_path / "spotq.log") as spotq:
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=body)
        wait_until("message settled", lambda: queue_depth(moto, queue) == 0, timeout=30)
        assert spotq.metric("spotq_messages_finished_total", outcome="unknown_instance") == 1
    assert moto.lifecycle_actions() == []  # not completed, not even a heartbeat


def test_a_hook_call_that_can_never_succeed_is_not_retried_forever(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    body = (Path(__file__).parent.parent / "data/events/autoscaling-direct/lifecycle-terminate.json").read_text()
    body = body.replace("465e0162-e6af-4786-b4e8-bb544ae58790", "short")  # AWS rejects tokens under 36 characters
    (node,) = local_cluster.create_spot_nodes(1)  # the hook must be ours to be completed at all
    body = body.replace("i-0633ac2b0d9769723", node.instance_id)
    with SpotqProcess(spotq_env, log_path=tmp_path / "spotq.log") as spotq:
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=body)
        wait_until("message deleted", lambda: queue_depth(moto, queue) == 0, timeout=30)
        assert spotq.metric("spotq_messages_finished_total", outcome="failed") == 1
        assert "notice failed for good" in spotq.log_tail(50)
