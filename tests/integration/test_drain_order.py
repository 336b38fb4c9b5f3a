"""Eviction order against a real API server: system-critical pods (admitted with the system-cluster-critical class)
leave after the ordinary ones, or at the reserve before the deadline while an ordinary pod is still held by its
PodDisruptionBudget. When each pod went is read from the cluster."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from spotq import draining
from spotq.draining import DrainOptions
from spotq.kube.client import KubeClient
from spotq.kube.pods import PodClient
from spotq.settings import KubeSettings
from testenv import LocalCluster
from testenv.workloads import pdb_manifest

from .helpers import bind_pod

pytestmark = pytest.mark.integration


def bind(cluster: LocalCluster, namespace: str, node: str, name: str, **spec: Any) -> None:
    bind_pod(cluster, namespace, node, name, {"app": name.rsplit("-", 1)[0]}, **spec)


def watch_leaving(cluster: LocalCluster, pods: list[tuple[str, str]], seconds: float) -> dict[str, float]:
    """Monotonic time at which each (namespace, name) was first seen deleted or terminating, polling every 50 ms."""
    left: dict[str, float] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(left) < len(pods):
        for namespace, name in pods:
            if name in left:
                continue
            pod = cluster.client.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                left[name] = time.monotonic()
        time.sleep(0.05)
    return left


async def drain(cluster: LocalCluster, node: str, seconds: float, reserve: float) -> draining.DrainReport:
    kube = await KubeClient.connect(KubeSettings(kubeconfig=str(cluster.kubeconfig_path)), max_connections=8)
    try:
        options = DrainOptions(
            retry_initial_seconds=0.1, retry_max_seconds=0.5, settle_seconds=0.0, critical_reserve_seconds=reserve
        )
        deadline = asyncio.get_running_loop().time() + seconds
        return await draining.drain(node, deadline, PodClient(kube), options, asyncio.Semaphore(10))
    finally:
        await kube.close()


def test_system_critical_pods_leave_at_the_reserve_while_a_budget_still_holds_an_ordinary_pod(
    local_cluster: LocalCluster, namespace: str
) -> None:
    node = local_cluster.create_spot_nodes(1)[0].node_name
    critical = f"dns-{namespace[-6:]}"
    bind(local_cluster, namespace, node, "web-0")
    bind(local_cluster, namespace, node, "web-1")
    bind(local_cluster, namespace, node, "free-0")
    bind(local_cluster, "kube-system", node, critical, priorityClassName="system-cluster-critical")
    admitted = local_cluster.client.get(f"/api/v1/namespaces/kube-system/pods/{critical}")
    assert admitted["spec"]["priority"] >= 2_000_000_000
    # One of the two web pods may go; the other is held until the deadline.
    local_cluster.client.create(
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
        pdb_manifest("web", {"app": "web"}, min_available=1),
    )
    path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/web"
    local_cluster.client.wait_for(
        "the budget to allow one disruption",
        lambda: (local_cluster.client.get(path).get("status") or {}).get("disruptionsAllowed") == 1,
        timeout=30,
    )
    started = time.monotonic()
    with_names = [(namespace, "web-0"), (namespace, "web-1"), (namespace, "free-0"), ("kube-system", critical)]

    async def both() -> tuple[draining.DrainReport, dict[str, float]]:
        watching = asyncio.create_task(asyncio.to_thread(watch_leaving, local_cluster, with_names, 12.0))
        report = await drain(local_cluster, node, seconds=8.0, reserve=4.0)
        return report, await watching

    report, left = asyncio.run(both())
    webs = [name for name in ("web-0", "web-1") if name in left]
    assert len(webs) == 1 and left["free-0"] - started < 2.0  # the ordinary pods went at once, one web held
    assert critical in left
    assert 3.0 <= left[critical] - started <= 6.0, left[critical] - started  # at the reserve: 8 s - 4 s
    assert f"kube-system/{critical}" in report.evicted and report.timed_out
