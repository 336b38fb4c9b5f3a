"""The chart's placement and priority defaults, installed into the real local control plane.

The real scheduler places the pods on kwok nodes labelled as EKS, Karpenter and eksctl label them; the real API server
admits (or refuses) the priority classes and the Lease RBAC. Each release lives in the test's own namespace, which is
not kube-system, and selects only the test's nodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from testenv import LocalCluster
from testenv.kube import JSON
from testenv.procs import wait_until

from .support import Helm, can_i, sets

pytestmark = pytest.mark.integration

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/placement"
FARGATE_TAINT = {"key": "eks.amazonaws.com/compute-type", "value": "fargate", "effect": "NoSchedule"}


@contextmanager
def _installed(helm: Helm, release: str, namespace: str, values: dict[str, str]) -> Iterator[None]:
    helm.run("install", release, "helm/spotq", "--namespace", namespace, *sets(values))
    try:
        yield
    finally:
        helm.run("uninstall", release, "--namespace", namespace, "--wait", check=False)


def _running_pods(cluster: LocalCluster, namespace: str, release: str, count: int) -> list[JSON]:
    """The release's pods once exactly `count` are bound and running."""
    found: list[JSON] = []

    def running() -> bool:
        pods = [
            p
            for p in cluster.list_pods(namespace, label_selector=f"app.kubernetes.io/instance={release}")
            if not p["metadata"].get("deletionTimestamp")
        ]
        if len(pods) == count and all(p["status"].get("phase") == "Running" for p in pods):
            found[:] = pods
        return bool(found)

    wait_until(f"{count} running pod(s) of {release}", running, timeout=60, interval=0.5)
    return found


def _group(namespace: str) -> dict[str, str]:
    return {"testenv/group": namespace}


def _names(nodes: Sequence[tuple[str, str]]) -> set[str]:
    return {name for name, _ in nodes}


def test_queue_pod_is_scheduled_on_the_on_demand_node_not_a_spot_one(
    local_cluster: LocalCluster, cluster_helm: Helm, namespace: str
) -> None:
    group = _group(namespace)
    # One node per Spot label scheme (EKS managed node group with eksctl's lifecycle label; Karpenter; lifecycle
    # alone), and one on-demand node: an unbiased scheduler would pick the on-demand one a quarter of the time.
    spot = _names(local_cluster.create_spot_nodes(1, labels=group))
    spot |= _names(local_cluster.create_on_demand_nodes(1, labels={**group, "karpenter.sh/capacity-type": "spot"}))
    spot |= _names(local_cluster.create_on_demand_nodes(1, labels={**group, "lifecycle": "Ec2Spot"}))
    ((on_demand, _),) = local_cluster.create_on_demand_nodes(1, labels=group)

    release = "spotq-avoid-spot"
    with _installed(
        cluster_helm, release, namespace, {"queue.url": QUEUE_URL, "nodeSelector.testenv/group": namespace}
    ):
        (pod,) = _running_pods(local_cluster, namespace, release, 1)
        assert pod["spec"]["nodeName"] == on_demand, f"scheduled on {pod['spec']['nodeName']}, a Spot node of {spot}"


def test_system_priority_classes_are_admitted_outside_kube_system(
    local_cluster: LocalCluster, cluster_helm: Helm, namespace: str
) -> None:
    group = _group(namespace)
    local_cluster.create_on_demand_nodes(1, labels=group)
    assert namespace != "kube-system"
    queue, imds = "spotq-prio-queue", "spotq-prio-imds"
    with (
        _installed(cluster_helm, queue, namespace, {"queue.url": QUEUE_URL, "nodeSelector.testenv/group": namespace}),
        _installed(cluster_helm, imds, namespace, {"mode": "imds", "nodeSelector.testenv/group": namespace}),
    ):
        (consumer,) = _running_pods(local_cluster, namespace, queue, 1)
        (monitor,) = _running_pods(local_cluster, namespace, imds, 1)
    # The Priority admission plugin resolved the class names the chart set by default into their values.
    assert (consumer["spec"]["priorityClassName"], consumer["spec"]["priority"]) == (
        "system-cluster-critical",
        2000000000,
    )
    assert (monitor["spec"]["priorityClassName"], monitor["spec"]["priority"]) == ("system-node-critical", 2000001000)


def test_replicas_run_on_different_nodes_and_may_use_leases_only_in_their_namespace(
    local_cluster: LocalCluster, cluster_helm: Helm, namespace: str
) -> None:
    group = _group(namespace)
    local_cluster.create_spot_nodes(1, labels=group)
    on_demand = _names(local_cluster.create_on_demand_nodes(2, labels=group, zones=["us-east-1a", "us-east-1b"]))
    release = "spotq-replicas"
    values = {"queue.url": QUEUE_URL, "replicas": "2", "nodeSelector.testenv/group": namespace}
    with _installed(cluster_helm, release, namespace, values):
        pods = _running_pods(local_cluster, namespace, release, 2)
        assert {p["spec"]["nodeName"] for p in pods} == on_demand
        budget = local_cluster.client.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{release}")
        assert budget["spec"]["minAvailable"] == 1

        kubeconfig = local_cluster.token_kubeconfig(namespace, release)
        verbs = ["get", "list", "watch", "create", "update", "delete"]
        assert [v for v in verbs if not can_i(kubeconfig, v, "leases.coordination.k8s.io", f"-n={namespace}")] == []
        elsewhere = [f"-n={ns}" for ns in ("default", "kube-system")] + ["--all-namespaces"]
        granted = [(v, s) for v in verbs for s in elsewhere if can_i(kubeconfig, v, "leases.coordination.k8s.io", s)]
        assert granted == []
        assert not can_i(kubeconfig, "patch", "leases.coordination.k8s.io", f"-n={namespace}")


def test_imds_daemonset_skips_fargate_nodes_it_would_otherwise_tolerate(
    local_cluster: LocalCluster, cluster_helm: Helm, namespace: str
) -> None:
    group = _group(namespace)
    ((spot, _),) = local_cluster.create_spot_nodes(1, labels=group)
    fargate_labels = {**group, "eks.amazonaws.com/compute-type": "fargate", "lifecycle": "Ec2Spot"}
    ((fargate, _),) = local_cluster.create_on_demand_nodes(1, labels=fargate_labels, taints=[FARGATE_TAINT])
    release = "spotq-fargate"
    values = {"mode": "imds", "nodeSelector.testenv/group": namespace, "nodeSelector.lifecycle": "Ec2Spot"}
    with _installed(cluster_helm, release, namespace, values):
        (pod,) = _running_pods(local_cluster, namespace, release, 1)
        assert pod["spec"]["nodeName"] == spot
        status = local_cluster.client.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{release}")["status"]
        assert status["desiredNumberScheduled"] == 1, f"the DaemonSet wants a pod on {fargate} too"


@pytest.mark.parametrize(
    ("namespace_name", "values", "warned"),
    [
        ("spotq", {}, True),
        ("kube-system", {}, False),
        ("spotq", {"priorityClassName": ""}, False),
        ("spotq", {"priorityClassName": "spotq-high"}, False),
        ("spotq", {"mode": "imds"}, True),
    ],
    ids=["own-namespace", "kube-system", "none", "own-class", "imds-own-namespace"],
)
def test_notes_warn_when_a_system_priority_class_is_used_outside_kube_system(
    cluster_helm: Helm, namespace_name: str, values: dict[str, str], warned: bool
) -> None:
    args = sets({"queue.url": QUEUE_URL, **values})
    notes = cluster_helm.run("install", "spotq", "helm/spotq", "--namespace", namespace_name, "--dry-run=client", *args)
    text = notes.stdout.split("NOTES:", 1)[1]
    assert ("outside kube-system" in text) is warned, text
    if warned:
        assert "insufficient quota to match these scopes" in text
