"""Instance → node, and whether it is ours to act on.

Queue mode (Resolver): the watch-fed index by providerID first; on a miss, EC2 DescribeInstances → PrivateDnsName
→ node; then the node selector and the instance tag. IMDS mode (OwnNode): the notice is about the node the pod
runs on, by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spotq.notices import InstanceId
from spotq.ports import InstanceInfo, InstanceLookup, NodeLookup, NodeRef


@dataclass(frozen=True)
class Resolution:
    node: NodeRef | None
    in_scope: bool
    why: str = ""


class Resolve(Protocol):
    async def resolve(self, instance_id: InstanceId) -> Resolution: ...

    async def joined(self, instance_id: InstanceId) -> None:
        """Wait (bounded by the caller) until the instance has joined as a node."""
        ...


class Resolver:
    def __init__(self, index: NodeLookup, describer: InstanceLookup | None, instance_tag: str = "") -> None:
        self._index = index
        self._describer = describer
        key, _, value = instance_tag.partition("=")
        self._tag: tuple[str, str | None] | None = (key, value if "=" in instance_tag else None) if key else None

    async def resolve(self, instance_id: InstanceId) -> Resolution:
        await self._index.synced.wait()
        node = self._index.lookup(instance_id)
        info: InstanceInfo | None = None
        if (node is None or self._tag) and self._describer is not None:
            info = await self._describer.describe(instance_id)
            if node is None and info is not None and info.private_dns_name:
                node = self._index.by_name(info.private_dns_name)
        if node is None:
            return Resolution(None, False, "no node of this cluster has this instance")
        if not node.in_scope:
            return Resolution(node, False, "node does not match SPOTQ_KUBE__NODE_SELECTOR")
        if self._tag is not None and not _tagged(info, *self._tag):
            return Resolution(node, False, "instance lacks the tag in SPOTQ_KUBE__INSTANCE_TAG")
        return Resolution(node, True)

    async def joined(self, instance_id: InstanceId) -> None:
        """Wait until an instance that is no node yet (a launch) appears in the index: by providerID, or by the
        private DNS name EC2 knows it by. Bounded by the caller."""
        names: set[str] = set()

        def known() -> bool:
            return self._index.lookup(instance_id) is not None or any(self._index.by_name(n) for n in names)

        while not known():
            if self._describer is not None and not names:
                info = await self._describer.describe(instance_id)
                if info is not None and info.private_dns_name:
                    names.add(info.private_dns_name)
                    continue
            await self._index.wait_for(known)


def _tagged(info: InstanceInfo | None, key: str, value: str | None) -> bool:
    if info is None or key not in info.tags:
        return False
    return value is None or info.tags[key] == value


class OwnNode:
    """IMDS mode: every notice is about this pod's own node (NODE_NAME); the instance id is only cross-checked."""

    def __init__(self, index: NodeLookup, node_name: str) -> None:
        self._index = index
        self._name = node_name

    async def resolve(self, instance_id: InstanceId) -> Resolution:
        await self._index.synced.wait()
        node = self._index.by_name(self._name)
        if node is None:
            return Resolution(None, False, f"node {self._name} not in the cluster (yet)")
        if not node.in_scope:
            return Resolution(node, False, "node does not match SPOTQ_KUBE__NODE_SELECTOR")
        return Resolution(node, True)

    async def joined(self, instance_id: InstanceId) -> None:
        await self._index.wait_for(lambda: self._index.by_name(self._name) is not None)
