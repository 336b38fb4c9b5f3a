"""A drain against a real API server when pods keep landing on the node after its first look: a pod bound there
meanwhile, and a pod re-created with the same name (a new UID, as a StatefulSet does), are evicted before the drain
reports complete. Counted from the cluster, not from spotq's report alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import NoReturn

import pytest

from spotq import draining
from spotq.draining import DrainOptions, Pod
from spotq.kube.client import KubeClient
from spotq.kube.pods import PodClient
from spotq.settings import KubeSettings
from testenv import LocalCluster

from .helpers import bind_pod

pytestmark = pytest.mark.integration


class WatchedPodClient(PodClient):
    """The real client, telling the test when the drain has had its first look at the node."""

    def __init__(self, client: KubeClient) -> None:
        super().__init__(client)
        self.opened = asyncio.Event()

    async def follow_node(
        self,
        node: str,
        on_list: Callable[[list[Pod]], None],
        on_event: Callable[[str, Pod], None],
        quiet: asyncio.Event | None = None,
    ) -> NoReturn:
        def listed(pods: list[Pod]) -> None:
            on_list(pods)
            self.opened.set()

        await super().follow_node(node, listed, on_event, quiet)


def wait_gone(cluster: LocalCluster, namespace: str, name: str, uid: str, timeout: float = 30.0) -> None:
    """Until the pod with that UID no longer exists (kwok removes a pod once it is deleted)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pod = cluster.client.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        time.sleep(0.1)
    raise AssertionError(f"{namespace}/{name} was never evicted")


async def drain_while_pods_arrive(cluster: LocalCluster, namespace: str, node: str) -> tuple[draining.DrainReport, str]:
    kube = await KubeClient.connect(KubeSettings(kubeconfig=str(cluster.kubeconfig_path)), max_connections=8)
    try:
        pods = WatchedPodClient(kube)
        first_uid = await asyncio.to_thread(bind_pod, cluster, namespace, node, "web-0")
        loop = asyncio.get_running_loop()
        # Long enough for the re-created pod below to land well inside it on a slow machine.
        options = DrainOptions(retry_initial_seconds=0.1, retry_max_seconds=1.0, settle_seconds=8.0)
        drain = asyncio.create_task(draining.drain(node, loop.time() + 60, pods, options, asyncio.Semaphore(10)))
        await pods.opened.wait()
        await asyncio.to_thread(bind_pod, cluster, namespace, node, "late")  # bound after the first look
        await asyncio.to_thread(wait_gone, cluster, namespace, "web-0", first_uid)
        again_uid = await asyncio.to_thread(bind_pod, cluster, namespace, node, "web-0")  # same name, new UID
        async with asyncio.timeout(90):
            return await drain, again_uid
    finally:
        await kube.close()


def test_pods_bound_to_the_node_during_the_drain_are_evicted_before_it_completes(
    local_cluster: LocalCluster, namespace: str
) -> None:
    node = local_cluster.create_spot_nodes(1)[0].node_name
    report, again_uid = asyncio.run(drain_while_pods_arrive(local_cluster, namespace, node))
    assert report.complete, report
    assert sorted(report.evicted) == [f"{namespace}/late", f"{namespace}/web-0", f"{namespace}/web-0"]
    # From the cluster: nothing of ours is left on the node that is not on its way out.
    left = [
        pod["metadata"]["name"]
        for pod in local_cluster.list_pods(namespace, node_name=node)
        if pod["metadata"].get("deletionTimestamp") is None
    ]
    assert left == []
    recreated = local_cluster.client.get_or_none(f"/api/v1/namespaces/{namespace}/pods/web-0")
    assert recreated is None or recreated["metadata"].get("deletionTimestamp") is not None, again_uid
