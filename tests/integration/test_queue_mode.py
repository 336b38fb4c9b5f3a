"""spotq queue mode end to end: EventBridge rule → SQS (moto over HTTP) → spotq → a real API server.

Every assertion reads cluster state (nodes, pods, Deployments) or queue state, never calls we configured.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess

from .helpers import BudgetWatch, queue_depth, wait_until

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).parent.parent / "data" / "events"
TAINT = "spotq.io/spot-interruption"
LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def node(cluster: LocalCluster, name: str) -> dict[str, Any]:
    found = cluster.get_node(name)
    assert found is not None, f"node {name} vanished"
    return found


def marked(found: dict[str, Any], key: str = TAINT, effect: str = "NoSchedule") -> bool:
    taints = found.get("spec", {}).get("taints") or []
    return any(t["key"] == key and t["effect"] == effect for t in taints)


def workload_pods_on(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return [p for p in cluster.list_pods(namespace, node_name=name) if not p["metadata"].get("deletionTimestamp")]


def spot_warning(instance_id: str, when: datetime | None = None) -> dict[str, str]:
    return {
        "Source": "aws.ec2",
        "DetailType": "EC2 Spot Instance Interruption Warning",
        "Detail": json.dumps({"instance-id": instance_id, "instance-action": "terminate"}),
        **({"Time": when} if when else {}),  # type: ignore[dict-item]
    }


def test_spot_warnings_on_the_bus_drain_nodes_and_capacity_returns(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    spot = local_cluster.create_spot_nodes(8)
    local_cluster.create_on_demand_nodes(2)
    local_cluster.wait_nodes_ready([n.node_name for n in spot])
    deployments = {"web": (8, 7), "api": (6, 5), "worker": (4, 3)}  # replicas, minAvailable: one disruption at a time
    for name, (replicas, min_available) in deployments.items():
        local_cluster.create_deployment_with_pdb(
            namespace, name, replicas, min_available=min_available, termination_grace_period_seconds=2
        )
    local_cluster.wait_deployments_ready(namespace, list(deployments), timeout=120)

    # An EventBridge rule routes Spot warnings to the queue, as the CloudFormation stack sets up.
    events = moto.client("events")
    events.put_rule(
        Name="spot",
        EventPattern=json.dumps({"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]}),
    )
    queue_arn = moto.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_targets(Rule="spot", Targets=[{"Id": "q", "Arn": queue_arn}])

    # Interrupt the three nodes that carry the most pods, so PDBs must be waited for.
    by_load = sorted(spot, key=lambda n: -len(workload_pods_on(local_cluster, namespace, n.node_name)))
    victims = by_load[:3]
    assert sum(len(workload_pods_on(local_cluster, namespace, v.node_name)) for v in victims) >= 4
    with (
        BudgetWatch(local_cluster.client, namespace) as budgets,
        SpotqProcess(spotq_env, log_path=tmp_path / "spotq.log") as spotq,
    ):
        events.put_events(Entries=[spot_warning(v.instance_id) for v in victims])

        for victim in victims:
            wait_until(
                f"{victim.node_name} tainted and cordoned",
                lambda v=victim: (
                    marked(found := node(local_cluster, v.node_name))
                    and found["spec"].get("unschedulable")
                    and found["metadata"]["labels"].get(LB_LABEL) == "true"
                ),
                timeout=30,
            )
        for victim in victims:
            wait_until(
                f"{victim.node_name} drained",
                lambda v=victim: not workload_pods_on(local_cluster, namespace, v.node_name),
            )
        local_cluster.wait_deployments_ready(namespace, list(deployments), timeout=120)
        wait_until("queue emptied", lambda: queue_depth(moto, queue) == 0, timeout=30)

        # Replacements run on the remaining nodes only.
        victim_names = {v.node_name for v in victims}
        for pod in local_cluster.list_pods(namespace):
            if not pod["metadata"].get("deletionTimestamp"):
                assert pod["spec"].get("nodeName") not in victim_names
        # The API server's own PDB refusals were met and waited out.
        # Every budget held all along (sampled from the disruption controller's own status).
        assert budgets.samples > 10 and set(budgets.worst) == set(deployments)
        assert min(budgets.worst.values()) == 0, budgets.worst  # used to the limit, never past it
        assert spotq.metric("spotq_evictions_total", result="evicted") >= 4
        # This API server streams the initial pods in the watch (watch-list): one request per drained node.
        assert spotq.metric("spotq_kube_requests_total", operation="watch_list_pods") >= len(victims)
        assert spotq.metric("spotq_kube_requests_total", operation="list_pods") == 0
        assert spotq.metric("spotq_messages_finished_total", kind="spot_interruption", outcome="done") == 3
        annotations = node(local_cluster, victims[0].node_name)["metadata"]["annotations"]
        assert annotations["spotq.io/drain"] == "finished"
        assert json.loads(annotations["spotq.io/spot-interruption"])["deadline"]
        # Events an operator sees with `kubectl describe node` (found by the node's UID).
        victim_node = node(local_cluster, victims[0].node_name)
        events = local_cluster.client.list_items(
            "/api/v1/events", fieldSelector=f"involvedObject.uid={victim_node['metadata']['uid']}"
        )
        reasons = {e["reason"] for e in events if e.get("source", {}).get("component") == "spotq"}
        assert {"InterruptionNotice", "DrainFinished"} <= reasons
        # Untouched nodes stay schedulable.
        for other in by_load[3:]:
            assert not node(local_cluster, other.node_name)["spec"].get("unschedulable")
        assert spotq.stop() == 0


def _sample(name: str, **replace: str) -> str:
    body = (EVENTS / name).read_text()
    for old, new in replace.items():
        body = body.replace(old, new)
    return body


def test_every_sample_body_gets_its_fate(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    a, b, c, d = local_cluster.create_spot_nodes(4)
    local_cluster.wait_nodes_ready([a.node_name, b.node_name, c.node_name, d.node_name])
    # Sample bodies name i-0b662ef9931388ba0 and i-0633ac2b0d9769723: point them at our nodes.
    bodies = {
        "rebalance": _sample("eventbridge/rebalance-recommendation.json", **{"i-0b662ef9931388ba0": a.instance_id}),
        "state": _sample("eventbridge/state-change-shutting-down.json", **{"i-0b662ef9931388ba0": b.instance_id}),
        "lifecycle": _sample("autoscaling-direct/lifecycle-terminate.json", **{"i-0633ac2b0d9769723": c.instance_id}),
        "health": _sample(
            "eventbridge/health-scheduled-change.json",
            **{"i-0b662ef9931388ba0": d.instance_id, "i-0633ac2b0d9769723": "i-00000000000000001"},
        ),
        "test": _sample("autoscaling-direct/test-notification.json"),
        "unknown": _sample("eventbridge/spot-interruption-warning.json"),  # no such node here
        "malformed": '{"detail-type": "EC2 Spot Instance Interruption Warning", "detail": ',
        "ignored": json.dumps(
            {
                "version": "0",
                "id": "x",
                "detail-type": "Something Else",
                "source": "aws.s3",
                "time": "2025-06-03T14:20:05Z",
                "detail": {},
            }
        ),
        "sns": json.dumps({"Type": "Notification", "Message": _sample("autoscaling-direct/test-notification.json")}),
    }
    sqs = moto.client("sqs")
    with SpotqProcess(
        {**spotq_env, "SPOTQ_DRAIN__LIFECYCLE_HEARTBEAT_SECONDS": "1"}, log_path=tmp_path / "spotq.log"
    ) as spotq:
        for body in bodies.values():
            sqs.send_message(QueueUrl=queue, MessageBody=body)
        wait_until("every message settled", lambda: queue_depth(moto, queue) == 0, timeout=60)

        rebalanced = node(local_cluster, a.node_name)
        assert marked(rebalanced, "spotq.io/rebalance-recommendation", "PreferNoSchedule")
        assert not rebalanced["spec"].get("unschedulable")
        for cordoned, key in (
            (b, "spotq.io/state-change"),
            (c, "spotq.io/lifecycle-terminate"),
            (d, "spotq.io/scheduled-change"),
        ):
            found = node(local_cluster, cordoned.node_name)
            assert found["spec"].get("unschedulable"), cordoned.node_name
            assert marked(found, key), (cordoned.node_name, found["spec"].get("taints"))
        completions = moto.completed_lifecycle_actions()
        assert [(x.instance_id, x.lifecycle_action_token, x.lifecycle_action_result) for x in completions] == [
            (c.instance_id, "465e0162-e6af-4786-b4e8-bb544ae58790", "CONTINUE")
        ]
        finished = {
            outcome: spotq.metric("spotq_messages_finished_total", outcome=outcome)
            for outcome in ("done", "malformed", "ignored", "test_notification", "unknown_instance")
        }
        # health names one node of ours and one stranger: the stranger decides (unknown_instance), still deleted.
        assert finished == {"done": 3, "malformed": 1, "ignored": 1, "test_notification": 2, "unknown_instance": 2}
        assert "malformed message" in spotq.log_tail(200)


def test_a_refused_node_write_leaves_the_message_for_redelivery(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    (victim,) = local_cluster.create_spot_nodes(1)
    local_cluster.wait_nodes_ready([victim.node_name])
    # A ServiceAccount that may read nodes and pods but not patch nodes: every attempt fails with 403.
    local_cluster.create_service_account(namespace, "reader")
    local_cluster.client.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"{namespace}-reader"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            ],
        },
    )
    local_cluster.client.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{namespace}-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{namespace}-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    kubeconfig = local_cluster.token_kubeconfig(namespace, "reader")
    env = {**spotq_env, "SPOTQ_KUBE__KUBECONFIG": str(kubeconfig)}
    body = _sample("eventbridge/spot-interruption-warning.json", **{"i-0b662ef9931388ba0": victim.instance_id})
    try:
        with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:
            moto.client("sqs").send_message(QueueUrl=queue, MessageBody=body)
            wait_until(
                "two failed attempts",
                lambda: spotq.metric("spotq_messages_finished_total", outcome="transient") >= 2,
                timeout=30,
            )
            assert queue_depth(moto, queue) == 1  # never deleted, never lost
            assert spotq.metric("spotq_api_errors_total", api="kubernetes") >= 2
            assert not node(local_cluster, victim.node_name)["spec"].get("unschedulable")
    finally:
        local_cluster.client.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{namespace}-reader")
        local_cluster.client.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{namespace}-reader")


def test_sigterm_hands_unfinished_work_back_to_the_queue(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    (victim,) = local_cluster.create_spot_nodes(1)
    local_cluster.wait_nodes_ready([victim.node_name])
    # A PDB that allows no disruption at all: the drain cannot finish.
    local_cluster.create_deployment_with_pdb(
        namespace, "pinned", 2, min_available=2, termination_grace_period_seconds=1
    )
    local_cluster.wait_deployments_ready(namespace, ["pinned"])
    env = {**spotq_env, "SPOTQ_QUEUE__STOP_GRACE_SECONDS": "1"}
    body = _sample("eventbridge/spot-interruption-warning.json", **{"i-0b662ef9931388ba0": victim.instance_id})
    body = body.replace("2025-06-03T14:20:05Z", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    sqs = moto.client("sqs")
    spotq = SpotqProcess(env, log_path=tmp_path / "spotq.log").start()
    try:
        sqs.send_message(QueueUrl=queue, MessageBody=body)
        wait_until("the drain under way", lambda: spotq.metric("spotq_drains_in_flight") >= 1, timeout=30)
        assert node(local_cluster, victim.node_name)["spec"].get("unschedulable")
        started = time.monotonic()
        assert spotq.stop() == 0
        assert time.monotonic() - started < 10
    finally:
        spotq.stop()
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"  # visible again at once, for the next replica
    assert "stopping: releasing unfinished messages" in (tmp_path / "spotq.log").read_text()
