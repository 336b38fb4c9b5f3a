"""The chart in IMDS mode, installed into the real local control plane with the README's command.

kwok runs the DaemonSet's pods on the fake nodes, so placement is what the real scheduler and DaemonSet controller
decide from the rendered nodeSelector and tolerations.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testenv import LocalCluster
from testenv.imds import ImdsMock
from testenv.kube import JSON
from testenv.procs import ManagedProcess, wait_until

from .support import REPO, Helm, ready, refusals, tainted_cordoned_and_empty, web_pods_on_one_node

pytestmark = pytest.mark.integration

NAMESPACE = "kube-system"
RELEASE = "spotq"
DAEMONSET = f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{RELEASE}"


def _spotq_pods(cluster: LocalCluster) -> list[JSON]:
    return [
        p
        for p in cluster.list_pods(NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}")
        if not p["metadata"].get("deletionTimestamp")
    ]


def _running_on(cluster: LocalCluster) -> set[str]:
    return {p["spec"]["nodeName"] for p in _spotq_pods(cluster) if p["status"].get("phase") == "Running"}


def _spot_labelled(cluster: LocalCluster) -> set[str]:
    return {
        n["metadata"]["name"] for n in cluster.client.list_items("/api/v1/nodes", labelSelector="lifecycle=Ec2Spot")
    }


def test_daemonset_runs_spotq_imds_only_on_nodes_labelled_lifecycle_ec2spot(
    local_cluster: LocalCluster, cluster_helm: Helm
) -> None:
    spot = {name for name, _ in local_cluster.create_spot_nodes(2)}
    (on_demand, _), (later_spot, _) = local_cluster.create_on_demand_nodes(2)
    assert spot <= _spot_labelled(local_cluster) and on_demand not in _spot_labelled(local_cluster)

    cluster_helm.run(
        "install", RELEASE, "helm/spotq", "--namespace", NAMESPACE,
        "--set", "mode=imds", "--set", "nodeSelector.lifecycle=Ec2Spot",
    )  # fmt: skip
    try:
        daemonsets = local_cluster.kubectl("get", "daemonsets", "--all-namespaces").stdout
        assert any(line.split()[:2] == [NAMESPACE, RELEASE] for line in daemonsets.splitlines())

        wait_until(
            "a running spotq pod on every Spot node and nowhere else",
            lambda: _running_on(local_cluster) == _spot_labelled(local_cluster),
            timeout=60,
            interval=0.5,
        )
        assert spot <= _running_on(local_cluster)
        assert on_demand not in _running_on(local_cluster)
        for pod in _spotq_pods(local_cluster):
            (spotq,) = pod["spec"]["containers"]
            assert spotq["args"] == ["imds"]
            assert {
                "name": "NODE_NAME",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}},
            } in spotq["env"]
            assert pod["spec"]["serviceAccountName"] == RELEASE

        # A node that gains the label gains a pod; the DaemonSet reports them all ready.
        local_cluster.client.patch(f"/api/v1/nodes/{later_spot}", {"metadata": {"labels": {"lifecycle": "Ec2Spot"}}})
        wait_until(
            "a spotq pod on the newly labelled node",
            lambda: later_spot in _running_on(local_cluster),
            timeout=60,
            interval=0.5,
        )

        def all_ready() -> bool:
            status = local_cluster.client.get(DAEMONSET)["status"]
            wanted = len(_spot_labelled(local_cluster))
            return bool(status.get("desiredNumberScheduled") == status.get("numberReady") == wanted)

        wait_until("the DaemonSet ready on every Spot node", all_ready, timeout=60, interval=0.5)
        assert on_demand not in _running_on(local_cluster)
    finally:
        uninstall = cluster_helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
    assert uninstall.returncode == 0, uninstall.stderr
    assert local_cluster.client.get_or_none(DAEMONSET) is None


def test_daemonset_keeps_running_on_a_node_spotq_has_tainted_and_cordoned(
    local_cluster: LocalCluster, cluster_helm: Helm
) -> None:
    (node, _), *_ = local_cluster.create_spot_nodes(1)
    local_cluster.client.patch(
        f"/api/v1/nodes/{node}",
        {"spec": {"unschedulable": True, "taints": [{"key": "spotq.io/spot-interruption", "effect": "NoSchedule"}]}},
    )
    cluster_helm.run(
        "install", RELEASE, "helm/spotq", "--namespace", NAMESPACE,
        "--set", "mode=imds", "--set", "nodeSelector.lifecycle=Ec2Spot",
    )  # fmt: skip
    try:
        wait_until(
            "a spotq pod on the tainted node", lambda: node in _running_on(local_cluster), timeout=60, interval=0.5
        )
    finally:
        result: subprocess.CompletedProcess[str] = cluster_helm.run(
            "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False
        )
    assert result.returncode == 0, result.stderr


def test_spotq_imds_with_the_daemonset_environment_drains_its_node_as_the_chart_service_account(
    local_cluster: LocalCluster, cluster_helm: Helm, namespace: str, tmp_path: Path
) -> None:
    target, instance_id, spare = web_pods_on_one_node(local_cluster, namespace)

    cluster_helm.run(
        "install", RELEASE, "helm/spotq", "--namespace", NAMESPACE,
        "--set", "mode=imds", "--set", "nodeSelector.lifecycle=Ec2Spot", "--set", "imds.pollIntervalSeconds=1",
    )  # fmt: skip
    spotq: ManagedProcess | None = None
    try:
        (container,) = local_cluster.client.get(DAEMONSET)["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["imds"]
        kubeconfig = local_cluster.token_kubeconfig(NAMESPACE, RELEASE)
        with ImdsMock(workdir=tmp_path / "imds", notice_delay_sec=2, imdsv2=True, instance_id=instance_id) as imds:
            env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            env |= {
                "PATH": "/usr/bin:/bin",
                "NODE_NAME": target,  # in the pod: the downward API's spec.nodeName
                "SPOTQ_KUBE__POD_NAME": "spotq-imds-0",
                "SPOTQ_KUBE__POD_NAMESPACE": NAMESPACE,
                "SPOTQ_KUBE__KUBECONFIG": str(kubeconfig),  # in the pod: the same ServiceAccount's token
                "SPOTQ_IMDS__ENDPOINT": imds.endpoint_url,  # in the pod: 169.254.169.254
                "SPOTQ_SERVER__ADDRESS": "127.0.0.1",
                "SPOTQ_SERVER__PORT": "0",  # a free port; the log says which
            }
            assert env["SPOTQ_IMDS__POLL_INTERVAL_SECONDS"] == "1"
            argv = [sys.executable, "-m", "spotq", *container["args"]]
            spotq = ManagedProcess("spotq-imds", argv, tmp_path / "spotq.log", env=env, cwd=REPO)
            wait_until("spotq imds /readyz", lambda: ready(spotq.log_path), timeout=60, processes=[spotq])

            def drained() -> bool:
                return tainted_cordoned_and_empty(local_cluster, namespace, target, "spotq.io/spot-interruption")

            wait_until("the node tainted, cordoned and empty", drained, timeout=90, interval=0.5, processes=[spotq])
            local_cluster.wait_deployments_ready(namespace, ["web"], timeout=60)
            assert {p["spec"]["nodeName"] for p in local_cluster.list_pods(namespace)} == {spare}
    finally:
        code = spotq.stop(timeout=30) if spotq is not None else None
        cluster_helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
    log = (tmp_path / "spotq.log").read_text()
    assert refusals(log) == [], log[-4000:]
    assert code == 0, log[-4000:]
