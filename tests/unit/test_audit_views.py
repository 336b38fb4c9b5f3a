"""The audit's views of raw API objects: which nodes are Spot and of which pool and zone, what a pod carries, which
pods belong to which workload, what a budget's status says."""

from __future__ import annotations

from spotq import selectors
from spotq.audit import views
from spotq.audit.views import Owner, Snapshot


def node(name: str, **labels: str) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": labels}}


def test_spot_nodes_by_the_labels_of_eks_karpenter_and_eksctl() -> None:
    spot = [
        node("a", **{"eks.amazonaws.com/capacityType": "SPOT"}),
        node("b", **{"karpenter.sh/capacity-type": "spot"}),
        node("c", lifecycle="Ec2Spot"),
    ]
    not_spot = [
        node("d", **{"eks.amazonaws.com/capacityType": "ON_DEMAND"}),
        node("e", **{"karpenter.sh/capacity-type": "on-demand"}),
        node("f"),
    ]
    assert [views.node_from(n).spot for n in spot] == [True, True, True]
    assert [views.node_from(n).spot for n in not_spot] == [False, False, False]


def test_pool_is_the_nodepool_or_node_group_else_the_instance_type_and_zone_the_topology_label() -> None:
    typed = {"node.kubernetes.io/instance-type": "m5.large", "topology.kubernetes.io/zone": "eu-west-1a"}
    assert views.node_from(node("a", **typed, **{"karpenter.sh/nodepool": "spot"})).pool == "spot"
    assert views.node_from(node("a", **typed, **{"eks.amazonaws.com/nodegroup": "ng"})).pool == "ng"
    assert views.node_from(node("a", **typed)).pool == "m5.large"
    assert views.node_from(node("a", **typed)).zone == "eu-west-1a"
    assert views.node_from(node("a")).pool == "" and views.node_from(node("a")).zone == ""


def test_pod_view() -> None:
    pod = views.pod_from(
        {
            "metadata": {
                "namespace": "ns",
                "name": "p",
                "labels": {"app": "x"},
                "ownerReferences": [
                    {"kind": "Other", "name": "o"},
                    {"kind": "ReplicaSet", "name": "rs", "controller": True},
                ],
                "annotations": {"kubernetes.io/config.mirror": "abc"},
            },
            "spec": {
                "nodeName": "n1",
                "terminationGracePeriodSeconds": 200,
                "volumes": [
                    {"name": "a", "emptyDir": {}},
                    {"name": "b", "hostPath": {"path": "/x"}},
                    {"name": "c", "configMap": {}},
                ],
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    assert pod.controller == Owner("ReplicaSet", "rs") and pod.node_name == "n1" and pod.grace_seconds == 200
    assert pod.local_volumes == ("emptyDir a", "hostPath b") and pod.ready and pod.mirror and pod.live
    bare = views.pod_from({"metadata": {"name": "q", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {}})
    assert bare.controller is None and bare.grace_seconds == 30 and not bare.ready and not bare.live


def test_budget_status_counts_only_once_the_controller_has_seen_the_current_spec() -> None:
    seen = {"metadata": {"name": "b", "generation": 2}, "spec": {"maxUnavailable": 0},
            "status": {"observedGeneration": 2, "disruptionsAllowed": 0, "currentHealthy": 3, "expectedPods": 3}}  # fmt: skip
    assert views.budget_from(seen).disruptions_allowed == 0
    stale = {**seen, "status": {**seen["status"], "observedGeneration": 1}}  # type: ignore[dict-item]
    assert views.budget_from(stale).disruptions_allowed is None
    assert views.budget_from(seen).max_unavailable == 0 and views.budget_from(seen).expected_pods == 3


def owned(kind: str, name: str) -> dict[str, object]:
    return {"ownerReferences": [{"kind": kind, "name": name, "controller": True}]}


def test_pods_go_to_their_workload_through_the_replicaset() -> None:
    snapshot = Snapshot(
        deployments=[{"metadata": {"namespace": "ns", "name": "web"}, "spec": {"replicas": 3}}],
        statefulsets=[{"metadata": {"namespace": "ns", "name": "db"}, "spec": {}}],
        replicasets=[
            {"metadata": {"namespace": "ns", "name": "web-1", **owned("Deployment", "web")}},
            {"metadata": {"namespace": "ns", "name": "lone"}, "spec": {"replicas": 2}},
        ],
        pods=[
            {"metadata": {"namespace": "ns", "name": "web-1-a", **owned("ReplicaSet", "web-1")}, "spec": {}},
            {"metadata": {"namespace": "ns", "name": "web-1-b", **owned("ReplicaSet", "web-1")}, "spec": {}},
            {"metadata": {"namespace": "ns", "name": "db-0", **owned("StatefulSet", "db")}, "spec": {}},
            {"metadata": {"namespace": "ns", "name": "lone-a", **owned("ReplicaSet", "lone")}, "spec": {}},
            {"metadata": {"namespace": "other", "name": "web-1-c", **owned("ReplicaSet", "web-1")}, "spec": {}},
            {"metadata": {"namespace": "ns", "name": "bare"}, "spec": {}},
        ],
    )
    workloads = {(w.kind, w.name): (w.replicas, [p.name for p in w.pods]) for w in
                 views.cluster_from(snapshot, selectors.parse("")).workloads}  # fmt: skip
    assert workloads == {
        ("Deployment", "web"): (3, ["web-1-a", "web-1-b"]),
        ("StatefulSet", "db"): (1, ["db-0"]),  # replicas unset: 1
        ("ReplicaSet", "lone"): (2, ["lone-a"]),
    }


def test_only_nodes_in_spotqs_scope_are_audited() -> None:
    snapshot = Snapshot(nodes=[node("a", lifecycle="Ec2Spot", team="x"), node("b", lifecycle="Ec2Spot")])
    assert [n.name for n in views.cluster_from(snapshot, selectors.parse("team=x")).nodes] == ["a"]
    assert list(views.cluster_from(snapshot, selectors.parse("")).spot_nodes()) == ["a", "b"]


def test_spotq_objects_being_deleted_protect_nothing() -> None:
    gone = {"namespace": "spotq", "name": "old", "deletionTimestamp": "2024-01-01T00:00:00Z"}
    snapshot = Snapshot(
        imds_daemonsets=[{"metadata": {"namespace": "spotq", "name": "spotq"}}, {"metadata": gone}],
        queue_deployments=[{"metadata": gone, "status": {"readyReplicas": 1}}],
    )
    state = views.cluster_from(snapshot, selectors.parse(""))
    assert [str(ds) for ds in state.imds_daemonsets] == ["spotq/spotq"] and state.queue_consumers == ()
