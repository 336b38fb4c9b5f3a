"""Quiet drains share one pod watch, against a real API server: two nodes' drains evict their pods, go quiet while
the pods are held back (a finalizer stands in for a long grace), close their nodes' own watches and learn of the
deletions from one cluster-wide watch; their drains then complete."""

from __future__ import annotations

import asyncio

import pytest

from spotq import draining
from spotq.draining import DrainOptions
from spotq.kube.client import KubeClient
from spotq.kube.pods import PodClient
from spotq.observability import metrics
from spotq.settings import KubeSettings
from testenv import LocalCluster
from testenv.workloads import bare_pod_manifest

pytestmark = pytest.mark.integration

FINALIZER = "spotq.test/hold"
WATCHES = ("watch_list_pods", "watch_pods", "list_pods", "watch_pods_deleted")


def held_pods(cluster: LocalCluster, namespace: str, node: str, count: int) -> list[str]:
    """Pods bound to `node` that stay, terminating, until their finalizer is taken off (a long grace)."""
    names = []
    for i in range(count):
        name = f"{node}-p{i}"
        cluster.client.create(
            f"/api/v1/namespaces/{namespace}/pods", bare_pod_manifest(name, node, finalizers=[FINALIZER])
        )
        names.append(name)
    return names


def sent(operation: str) -> float:
    return metrics.REGISTRY.get_sample_value("spotq_kube_requests_total", {"operation": operation}) or 0.0


async def drain_two_nodes(cluster: LocalCluster, namespace: str, nodes: list[str]) -> dict[str, object]:
    kube = await KubeClient.connect(KubeSettings(kubeconfig=str(cluster.kubeconfig_path)), max_connections=16)
    pods = PodClient(kube, shared_grace_watch=True)
    loop = asyncio.get_running_loop()
    quiet = {node: asyncio.Event() for node in nodes}
    options = DrainOptions(settle_seconds=0.5, retry_initial_seconds=0.05)
    before = {operation: sent(operation) for operation in WATCHES}
    try:
        drains = [
            asyncio.create_task(
                draining.drain(node, loop.time() + 60, pods, options, asyncio.Semaphore(10), on_quiet=quiet[node].set)
            )
            for node in nodes
        ]
        async with asyncio.timeout(30):
            for event in quiet.values():
                await event.wait()
            while not pods._shared or not pods._shared.running:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the nodes' own watches are closed by now
        at_quiet = {operation: sent(operation) - before[operation] for operation in WATCHES}
        for node in nodes:  # the pods' grace ends
            for name in (f"{node}-p0", f"{node}-p1"):
                await asyncio.to_thread(
                    cluster.client.patch,
                    f"/api/v1/namespaces/{namespace}/pods/{name}",
                    {"metadata": {"finalizers": None}},
                )
        async with asyncio.timeout(30):
            reports = await asyncio.gather(*drains)
        after = {operation: sent(operation) - before[operation] for operation in WATCHES}
        return {"reports": reports, "at_quiet": at_quiet, "after": after}
    finally:
        await kube.close()


def test_quiet_drains_wait_out_their_pods_on_one_shared_watch(local_cluster: LocalCluster, namespace: str) -> None:
    nodes = [ref.node_name for ref in local_cluster.create_spot_nodes(2)]
    for node in nodes:
        held_pods(local_cluster, namespace, node, 2)
    result = asyncio.run(drain_two_nodes(local_cluster, namespace, nodes))
    reports = result["reports"]
    assert isinstance(reports, list)
    for report in reports:
        assert report.complete, report
        assert len(report.evicted) == 2
    at_quiet, after = result["at_quiet"], result["after"]
    assert isinstance(at_quiet, dict) and isinstance(after, dict)
    assert at_quiet["watch_pods_deleted"] == 1  # one watch for both nodes
    # The deletions came on the shared watch: no node watched or listed its pods again after going quiet.
    assert after == at_quiet
    # Nothing is left on the nodes.
    for node in nodes:
        left = local_cluster.client.get(f"/api/v1/namespaces/{namespace}/pods", fieldSelector=f"spec.nodeName={node}")
        assert left["items"] == []
