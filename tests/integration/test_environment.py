"""Proves the local test environment behaves like the real thing where spotq depends on it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from testenv import LocalCluster, MotoServer
from testenv.imds import ImdsMock
from testenv.kube import JSON

pytestmark = pytest.mark.integration


def _node_ready(node: JSON) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))


def _running_ready(pod: JSON) -> bool:
    status = pod.get("status", {})
    return (
        not pod["metadata"].get("deletionTimestamp")
        and status.get("phase") == "Running"
        and any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    )


def test_spot_and_on_demand_nodes_go_ready_via_kwok(local_cluster: LocalCluster) -> None:
    spot = local_cluster.create_spot_nodes(3)
    on_demand = local_cluster.create_on_demand_nodes(1)

    for name, instance_id in spot:
        node = local_cluster.get_node(name)
        assert node is not None and _node_ready(node)
        labels = node["metadata"]["labels"]
        assert name.startswith("ip-10-0-") and name.endswith(".ec2.internal")
        assert len(instance_id) == 19 and instance_id.startswith("i-")
        assert node["spec"]["providerID"] == f"aws:///{labels['topology.kubernetes.io/zone']}/{instance_id}"
        assert labels["lifecycle"] == "Ec2Spot"
        assert labels["eks.amazonaws.com/capacityType"] == "SPOT"
        assert labels["kubernetes.io/hostname"] == name
        assert labels["node.kubernetes.io/instance-type"] == "m5.xlarge"
        assert node["status"]["allocatable"]["pods"] == "110"

    # kwok's heartbeat-with-lease stage keeps node leases, so the node lifecycle controller stays calm.
    leases = [f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}" for name, _ in spot]
    local_cluster.client.wait_for(
        "node leases",
        lambda: all(local_cluster.client.get_or_none(lease) is not None for lease in leases),
        timeout=30,
    )

    ((od_name, _),) = on_demand
    od = local_cluster.get_node(od_name)
    assert od is not None and _node_ready(od)
    assert "lifecycle" not in od["metadata"]["labels"]
    assert od["metadata"]["labels"]["eks.amazonaws.com/capacityType"] == "ON_DEMAND"

    assert local_cluster.apiserver_request_total(verb="POST", resource="nodes") >= 4
    result = local_cluster.kubectl("get", "nodes", "-l", "lifecycle=Ec2Spot", "-o", "name")
    assert {f"node/{n}" for n, _ in spot} <= set(result.stdout.split())


def test_pdb_eviction_is_enforced_and_replicaset_replaces_pod(local_cluster: LocalCluster, namespace: str) -> None:
    group = {"testenv/group": namespace}
    nodes = local_cluster.create_spot_nodes(3, labels=group)
    local_cluster.create_deployment_with_pdb(
        namespace, "web", 4, min_available=3, node_selector=group, termination_grace_period_seconds=3
    )
    local_cluster.wait_deployments_ready(namespace, ["web"], timeout=60)
    pdb_path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/web"
    local_cluster.client.wait_for(
        "the disruption controller to allow one disruption",
        lambda: local_cluster.client.get(pdb_path).get("status", {}).get("disruptionsAllowed") == 1,
        timeout=30,
    )

    pods = local_cluster.list_pods(namespace, label_selector="app=web")
    assert len(pods) == 4 and all(_running_ready(p) for p in pods)
    assert {p["spec"]["nodeName"] for p in pods} <= {n for n, _ in nodes}
    # The budget is the namespace's, not the node's: a second pod is refused wherever it runs (preferably on
    # another node; the scheduler may have put all four on one node that went Ready first, as it did once in CI).
    victim = pods[0]
    elsewhere = [p for p in pods[1:] if p["spec"]["nodeName"] != victim["spec"]["nodeName"]]
    second = (elsewhere or pods[1:])[0]
    victim_node = victim["spec"]["nodeName"]
    local_cluster.cordon(victim_node)

    status, _ = local_cluster.evict(namespace, victim["metadata"]["name"])
    assert status == 201
    status, body = local_cluster.evict(namespace, second["metadata"]["name"])
    assert status == 429, body
    assert "disruption budget" in body.get("message", "").lower()

    # The evicted pod terminates with its grace period (kwok's general pod-delete stage), not at once.
    evicted = local_cluster.client.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{victim['metadata']['name']}")
    assert evicted is not None and evicted["metadata"].get("deletionTimestamp")
    local_cluster.client.wait_for(
        "the evicted pod to be gone",
        lambda: (
            local_cluster.client.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{victim['metadata']['name']}")
            is None
        ),
        timeout=30,
    )

    def replaced() -> bool:
        current = local_cluster.list_pods(namespace, label_selector="app=web")
        return len(current) == 4 and all(_running_ready(p) for p in current)

    local_cluster.client.wait_for("the ReplicaSet to replace the evicted pod", replaced, timeout=60)
    current = local_cluster.list_pods(namespace, label_selector="app=web")
    replacement = [p for p in current if p["metadata"]["name"] not in {x["metadata"]["name"] for x in pods}]
    assert len(replacement) == 1
    assert replacement[0]["spec"]["nodeName"] != victim_node
    cordoned = local_cluster.get_node(victim_node)
    assert cordoned is not None and cordoned["spec"].get("unschedulable") is True

    # Once the budget recovers, the second pod may go too.
    local_cluster.client.wait_for(
        "the budget to recover",
        lambda: local_cluster.evict(namespace, second["metadata"]["name"])[0] == 201,
        timeout=60,
        interval=0.5,
    )


async def test_token_kubeconfig_is_subject_to_rbac(local_cluster: LocalCluster, namespace: str) -> None:
    local_cluster.create_service_account(namespace, "spotq")
    client = local_cluster.client
    client.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    client.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "spotq-pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "spotq", "namespace": namespace}],
        },
    )
    kubeconfig = local_cluster.token_kubeconfig(namespace, "spotq")
    assert "token:" in kubeconfig.read_text()

    api = await k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        core = k8s_client.CoreV1Api(api)
        pods = await core.list_namespaced_pod(namespace)
        assert pods.items == []
        with pytest.raises(ApiException) as denied:
            await core.list_node()
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:spotq" in denied.value.body
        with pytest.raises(ApiException) as denied:
            await core.list_namespaced_pod("kube-system")
        assert denied.value.status == 403
        with pytest.raises(ApiException) as denied:
            await core.delete_namespaced_pod("anything", namespace)
        assert denied.value.status == 403
    finally:
        await api.close()


def test_eventbridge_rule_delivers_spot_warning_to_sqs(moto: MotoServer) -> None:
    sqs = moto.client("sqs")
    events = moto.client("events")
    queue_url = sqs.create_queue(QueueName="spotq-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]}
    events.put_rule(Name="spot-interruption", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="spot-interruption", Targets=[{"Id": "queue", "Arn": queue_arn}])

    detail = {"instance-id": "i-0123456789abcdef0", "instance-action": "terminate"}
    result = events.put_events(
        Entries=[
            {"Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning", "Detail": json.dumps(detail)},
            {"Source": "aws.ec2", "DetailType": "EC2 Instance State-change Notification", "Detail": "{}"},
        ]
    )
    assert result["FailedEntryCount"] == 0

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    assert len(messages) == 1  # the rule filtered out the state-change event
    body = json.loads(messages[0]["Body"])
    assert body["source"] == "aws.ec2"
    assert body["detail-type"] == "EC2 Spot Instance Interruption Warning"
    assert body["detail"] == detail


def test_lifecycle_actions_are_accepted_and_recorded(moto: MotoServer) -> None:
    autoscaling = moto.client("autoscaling")
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="lc", ImageId="ami-12c6146b", InstanceType="m5.large"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="workers",
        LaunchConfigurationName="lc",
        MinSize=0,
        MaxSize=2,
        AvailabilityZones=["us-east-1a"],
    )
    autoscaling.put_lifecycle_hook(
        AutoScalingGroupName="workers",
        LifecycleHookName="drain",
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
        HeartbeatTimeout=300,
    )

    autoscaling.record_lifecycle_action_heartbeat(
        AutoScalingGroupName="workers", LifecycleHookName="drain", InstanceId="i-0123456789abcdef0"
    )
    autoscaling.complete_lifecycle_action(
        AutoScalingGroupName="workers",
        LifecycleHookName="drain",
        InstanceId="i-0123456789abcdef0",
        LifecycleActionToken="bcd2f1b8-9a34-4c1e-8c3b-1a2b3c4d5e6f",
        LifecycleActionResult="CONTINUE",
    )
    (heartbeat,) = moto.lifecycle_heartbeats()
    (completed,) = moto.completed_lifecycle_actions()
    assert heartbeat.instance_id == completed.instance_id == "i-0123456789abcdef0"
    assert completed.lifecycle_action_result == "CONTINUE"
    assert completed.lifecycle_action_token == "bcd2f1b8-9a34-4c1e-8c3b-1a2b3c4d5e6f"
    assert completed.accepted

    # Strict mode answers like AWS for a hook that does not exist; the attempt is still recorded.
    moto.lifecycle_log.strict = True
    with pytest.raises(autoscaling.exceptions.ClientError) as error:
        autoscaling.complete_lifecycle_action(
            AutoScalingGroupName="workers",
            LifecycleHookName="nope",
            InstanceId="i-0123456789abcdef0",
            LifecycleActionResult="ABANDON",
        )
    assert error.value.response["Error"]["Code"] == "ValidationError"
    assert [c.accepted for c in moto.lifecycle_actions()] == [True, True, False]

    # Another process can read the record over HTTP.
    with urllib.request.urlopen(f"{moto.endpoint_url}/_testenv/lifecycle-actions", timeout=5) as resp:
        remote = json.loads(resp.read())
    assert [c["action"] for c in remote] == [
        "RecordLifecycleActionHeartbeat",
        "CompleteLifecycleAction",
        "CompleteLifecycleAction",
    ]

    moto.reset()
    assert moto.lifecycle_actions() == []


def test_imds_mock_serves_spot_notice_after_delay(tmp_path: Path) -> None:
    def get(url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    with ImdsMock(workdir=tmp_path, notice_delay_sec=0, instance_id="i-0aaaaaaaaaaaaaaaa") as imds:
        status, body = get(f"{imds.endpoint_url}/latest/meta-data/spot/instance-action")
        assert status == 200
        assert json.loads(body)["action"] == "terminate"
        assert get(f"{imds.endpoint_url}/latest/meta-data/instance-id") == (200, "i-0aaaaaaaaaaaaaaaa")
    with ImdsMock(workdir=tmp_path, notice_delay_sec=3600) as imds:
        assert get(f"{imds.endpoint_url}/latest/meta-data/spot/instance-action")[0] == 404
