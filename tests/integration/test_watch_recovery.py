"""The PDB watch against a real API server, as a ServiceAccount whose RBAC arrives late (an API server restarting
answers 403 until its RBAC cache is warm): spotq keeps trying and gates evictions once it can watch."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from spotq.budgets import Budgets
from spotq.kube import watching
from spotq.kube.client import KubeClient
from spotq.kube.pdbs import watch_budgets
from spotq.observability import metrics
from spotq.settings import KubeSettings
from testenv import LocalCluster

pytestmark = pytest.mark.integration

QUICK = watching.Backoff(initial_seconds=0.05, max_seconds=0.2, denied_max_seconds=0.2)


def forbidden_restarts() -> float:
    labels = {"resource": "pdbs", "reason": "forbidden"}
    return metrics.REGISTRY.get_sample_value("spotq_watch_restarts_total", labels) or 0.0


async def watch_until_granted(cluster: LocalCluster, namespace: str, account: str, grant: str) -> Budgets:
    """Watch PDBs as `account` with no RBAC, grant list+watch after a few 403s, and return the budgets once
    they gate the namespace's PDB."""
    kubeconfig = await asyncio.to_thread(cluster.token_kubeconfig, namespace, account)
    kube = await KubeClient.connect(KubeSettings(kubeconfig=str(kubeconfig)), max_connections=4)
    budgets = Budgets()
    before = forbidden_restarts()
    try:
        async with asyncio.timeout(60):
            run = asyncio.create_task(watch_budgets(kube, budgets, backoff=QUICK))
            while forbidden_restarts() - before < 3:
                assert not run.done(), "the PDB watch gave up"
                await asyncio.sleep(0.05)
            assert not budgets.active
            await asyncio.to_thread(grant_pdb_watch, cluster, namespace, account, grant)
            while budgets.covering(namespace, {"app": "web"}) is None or not budgets.active:
                assert not run.done(), "the PDB watch gave up"
                await asyncio.sleep(0.05)
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        return budgets
    finally:
        await kube.close()


def grant_pdb_watch(cluster: LocalCluster, namespace: str, account: str, name: str) -> None:
    rule = {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list", "watch"]}
    cluster.client.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [rule],
        },
    )
    cluster.client.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )


def test_a_pdb_watch_denied_at_first_keeps_trying_and_gates_once_rbac_allows(
    local_cluster: LocalCluster, namespace: str
) -> None:
    account, grant = "late-rbac", f"spotq-test-pdb-watch-{uuid.uuid4().hex[:6]}"
    local_cluster.create_service_account(namespace, account)
    local_cluster.client.create(
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    try:
        budgets = asyncio.run(watch_until_granted(local_cluster, namespace, account, grant))
        assert budgets.active and budgets.covering(namespace, {"app": "web"}) == (namespace, "web")
    finally:
        local_cluster.client.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{grant}")
        local_cluster.client.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{grant}")
