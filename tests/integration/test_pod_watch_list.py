"""A drain's first look at a node's pods, against real API servers: one watch-list request (the pods, then the live
watch) where the server streams a watch's initial state, a list and a watch where it does not (WatchList switched
off, as Kubernetes 1.33 ships). Either way a pod deleted afterwards is seen."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from spotq.kube.client import KubeClient
from spotq.kube.pods import PodClient
from spotq.observability import metrics
from spotq.ports import Pod
from spotq.settings import KubeSettings
from testenv import LocalCluster
from testenv.workloads import bare_pod_manifest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_without_watch_list() -> Iterator[LocalCluster]:
    cluster = LocalCluster(extra_args={"kube-apiserver": ["--feature-gates=WatchList=false"]})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def bare_pods(cluster: LocalCluster, namespace: str, node: str, count: int) -> set[str]:
    """Pods bound straight to `node` (no scheduler): what a drain finds there."""
    names = set()
    for i in range(count):
        name = f"p{i}"
        cluster.client.create(f"/api/v1/namespaces/{namespace}/pods", bare_pod_manifest(name, node))
        names.add(name)
    return names


def sent(operation: str) -> float:
    return metrics.REGISTRY.get_sample_value("spotq_kube_requests_total", {"operation": operation}) or 0.0


async def first_look_then_a_deletion(cluster: LocalCluster, namespace: str, node: str) -> tuple[set[str], bool, str]:
    """follow_node, then delete one pod and wait for its DELETED event: (pods seen, watch-list used, deleted)."""
    kube = await KubeClient.connect(KubeSettings(kubeconfig=str(cluster.kubeconfig_path)), max_connections=8)
    lists: list[set[str]] = []
    first_look, deleted = asyncio.Event(), asyncio.Event()
    before = {operation: sent(operation) for operation in ("list_pods", "watch_pods")}
    victim = ""

    def listed(pods: list[Pod]) -> None:
        lists.append({pod.name for pod in pods if pod.namespace == namespace})
        first_look.set()

    def changed(kind: str, pod: Pod) -> None:
        if kind == "DELETED" and pod.namespace == namespace and pod.name == victim:
            deleted.set()

    follow = asyncio.create_task(PodClient(kube).follow_node(node, listed, changed))
    try:
        async with asyncio.timeout(30):
            await first_look.wait()
        victim = sorted(lists[0])[0]
        await asyncio.to_thread(
            cluster.client.delete, f"/api/v1/namespaces/{namespace}/pods/{victim}", grace_period_seconds=0
        )
        async with asyncio.timeout(30):
            await deleted.wait()
        assert len(lists) == 1, "the deletion came on the watch, not from a relist"
        one_request = all(sent(operation) == count for operation, count in before.items())
        return lists[0], one_request, victim
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await kube.close()


def test_watch_list_gives_pods_and_watch_in_one_request(local_cluster: LocalCluster, namespace: str) -> None:
    node = local_cluster.create_spot_nodes(1)[0].node_name
    names = bare_pods(local_cluster, namespace, node, 3)
    seen, watch_list, _ = asyncio.run(first_look_then_a_deletion(local_cluster, namespace, node))
    assert seen == names
    assert watch_list  # this API server (1.36) streams the initial state


def test_without_watch_list_the_pods_are_listed_and_watched(
    cluster_without_watch_list: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spotq.kube.watching")
    cluster = cluster_without_watch_list
    cluster.create_namespace("w")
    node = cluster.create_spot_nodes(1)[0].node_name
    names = bare_pods(cluster, "w", node, 3)
    seen, watch_list, _ = asyncio.run(first_look_then_a_deletion(cluster, "w", node))
    assert seen == names
    assert not watch_list  # refused, fell back to a list and a watch; the deletion still came through the watch
    refusals = [r for r in caplog.records if "refuses watch-list" in r.getMessage()]
    assert refusals and getattr(refusals[0], "status", None) in (400, 403, 422)
