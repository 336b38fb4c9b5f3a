"""A pod whose eviction its PodDisruptionBudget admitted, but that the API server never deleted, against a real API
server and disruption controller: the drain deletes it (the eviction's second half) instead of asking to evict it
again for the two minutes the budget counts it as disrupted.

How that state arises: an eviction cut off inside the API server after the budget's update and before the pod's
deletion (504 "context canceled": a client that gave up, a connection cut, an API server or a spotq killed
mid-request). Here the budget's status is given the entry the API server writes (status.disruptedPods), and the
disruption controller does the rest: it counts the pod as disrupted, and the budget allows no disruption.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from spotq import draining
from spotq.budgets import Budgets
from spotq.draining import DrainOptions
from spotq.kube.client import KubeClient
from spotq.kube.pdbs import watch_budgets
from spotq.kube.pods import PodClient
from spotq.settings import KubeSettings
from testenv import LocalCluster
from testenv.workloads import pdb_manifest

from .helpers import bind_pod
from .test_drain_arrivals import wait_gone

pytestmark = pytest.mark.integration


def admitted_but_not_deleted(cluster: LocalCluster, namespace: str, pod: str) -> None:
    """The budget's status as a cut-off eviction leaves it, and the controller's verdict on it: no disruption."""
    path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/web"
    cluster.client.wait_for(
        "the budget to allow one disruption",
        lambda: (cluster.client.get(path).get("status") or {}).get("disruptionsAllowed") == 1,
        timeout=60,
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.client.patch(f"{path}/status", {"status": {"disruptedPods": {pod: stamp}}})
    cluster.client.wait_for(
        "the controller to count the pod as disrupted",
        lambda: (
            (status := cluster.client.get(path).get("status") or {}).get("disruptionsAllowed") == 0
            and pod in (status.get("disruptedPods") or {})
        ),
        timeout=60,
    )


async def drain(cluster: LocalCluster, node: str, seconds: float) -> draining.DrainReport:
    kube = await KubeClient.connect(KubeSettings(kubeconfig=str(cluster.kubeconfig_path)), max_connections=8)
    budgets = Budgets()
    watching = asyncio.create_task(watch_budgets(kube, budgets))
    try:
        while not budgets.active:
            await asyncio.sleep(0.05)
        options = DrainOptions(retry_initial_seconds=0.2, retry_max_seconds=1.0, settle_seconds=0.0)
        deadline = asyncio.get_running_loop().time() + seconds
        return await draining.drain(node, deadline, PodClient(kube), options, asyncio.Semaphore(10), budgets)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await kube.close()


def test_a_pod_its_budget_counts_as_evicted_but_still_there_is_deleted_by_the_drain(
    local_cluster: LocalCluster, namespace: str
) -> None:
    drained, other = (n.node_name for n in local_cluster.create_spot_nodes(2))
    uid = bind_pod(local_cluster, namespace, drained, "web-0", {"app": "web"})
    bind_pod(local_cluster, namespace, other, "web-1", {"app": "web"})
    local_cluster.client.create(
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
        pdb_manifest("web", {"app": "web"}, min_available=1),
    )
    admitted_but_not_deleted(local_cluster, namespace, "web-0")
    # Well inside the two minutes the budget would count web-0 as disrupted: evicting it would be refused throughout.
    report = asyncio.run(drain(local_cluster, drained, 20.0))
    assert report.complete, report
    wait_gone(local_cluster, namespace, "web-0", uid, timeout=10)
    assert local_cluster.client.get_or_none(f"/api/v1/namespaces/{namespace}/pods/web-1") is not None
