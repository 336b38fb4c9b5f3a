"""kube.volumes.VolumeAttachmentIndex against the real API server: a wait for a node's volumes ends when its last
VolumeAttachment is deleted, and not before; another node's attachment does not hold it."""

from __future__ import annotations

import asyncio

import pytest

from spotq.kube.client import KubeClient
from spotq.kube.volumes import VolumeAttachmentIndex
from spotq.settings import KubeSettings
from testenv import LocalCluster

pytestmark = pytest.mark.integration
PATH = "/apis/storage.k8s.io/v1/volumeattachments"


def attachment(name: str, node: str) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "VolumeAttachment",
        "metadata": {"name": name},
        "spec": {"attacher": "ebs.csi.aws.com", "nodeName": node, "source": {"persistentVolumeName": f"pv-{name}"}},
    }


async def _wait_for_detach(cluster: LocalCluster, node: str, other: str, names: list[str]) -> None:
    kube = await KubeClient.connect(KubeSettings(kubeconfig=str(cluster.kubeconfig_path)), max_connections=4)
    volumes = VolumeAttachmentIndex()
    mirror = asyncio.create_task(volumes.run(kube))
    try:
        async with asyncio.timeout(20):
            while volumes.attached(node) != len(names):
                await asyncio.sleep(0.05)
        waiting = asyncio.create_task(volumes.wait_detached(node))
        for name in names[:-1]:
            await asyncio.to_thread(cluster.client.delete, f"{PATH}/{name}")
        await asyncio.sleep(0.5)
        assert not waiting.done()  # one volume still attached
        await asyncio.to_thread(cluster.client.delete, f"{PATH}/{names[-1]}")
        async with asyncio.timeout(10):
            assert await waiting is True
        assert volumes.attached(other) == 1
    finally:
        mirror.cancel()
        await kube.close()


def test_a_wait_for_a_nodes_volumes_ends_when_its_last_attachment_goes(local_cluster: LocalCluster) -> None:
    node, other = (n.node_name for n in local_cluster.create_spot_nodes(2))
    names = [f"va-{node[-8:]}-{i}" for i in range(2)]
    for name in names:
        local_cluster.client.create(PATH, attachment(name, node))
    local_cluster.client.create(PATH, attachment(f"va-{other[-8:]}", other))
    asyncio.run(_wait_for_detach(local_cluster, node, other, names))
