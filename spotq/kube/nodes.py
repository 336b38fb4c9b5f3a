"""Instance → node, from a Node watch keyed by `spec.providerID`: no API call per message.

The index keeps only what spotq needs per node (a few strings), so 5000 nodes cost little memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable

from spotq import selectors
from spotq.kube import records, watching
from spotq.kube.transport import JSON, Transport
from spotq.notices import InstanceId
from spotq.observability import metrics
from spotq.ports import NodeRef

log = logging.getLogger(__name__)

_PROVIDER_ID = re.compile(r"^aws:///[^/]*/(i-[0-9a-f]+)$")


def instance_of(provider_id: str | None) -> InstanceId | None:
    match = _PROVIDER_ID.match(provider_id or "")
    return InstanceId(match.group(1)) if match else None


LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def node_ref(node: JSON, selector: selectors.Selector, prefix: str = "spotq.io") -> NodeRef:
    """The node as the stages see it (spotq's own records read from its annotations), with a trimmed copy of what
    marks.patch_for needs (taints, unschedulable, spotq's own labels and annotations) as the writer's cache."""
    meta = node.get("metadata", {})
    labels: dict[str, str] = meta.get("labels") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(prefix)}
    spec = node.get("spec") or {}
    view: JSON = {
        "metadata": {
            "name": meta["name"],
            "resourceVersion": meta.get("resourceVersion", ""),
            "labels": {k: v for k, v in labels.items() if k == LB_LABEL or k.startswith(prefix)},
            "annotations": annotations,
        },
        "spec": {"taints": spec.get("taints") or [], "unschedulable": bool(spec.get("unschedulable"))},
    }
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return NodeRef(
        name=meta["name"],
        uid=meta.get("uid", ""),
        instance_id=instance_of(spec.get("providerID")),
        hostname=labels.get("kubernetes.io/hostname"),
        in_scope=selector.matches(labels),
        ready=ready,
        resource_version=meta.get("resourceVersion", ""),
        drain_state=annotations.get(records.drain_key(prefix)),
        drainer=annotations.get(records.drainer_key(prefix)),
        records=records.read(annotations, prefix),
        cached=view,
    )


class NodeIndex:
    """Fed by `run()`; read by `lookup()`. `synced` is set once the first full list is in."""

    def __init__(self, selector: selectors.Selector, prefix: str = "spotq.io") -> None:
        self._selector = selector
        self._prefix = prefix
        self._by_name: dict[str, NodeRef] = {}
        self._by_instance: dict[InstanceId, str] = {}
        self._by_hostname: dict[str, str] = {}
        self.synced = asyncio.Event()
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._by_name)

    def nodes(self) -> list[NodeRef]:
        """Every node indexed now (a copy: the watch may change the index meanwhile)."""
        return list(self._by_name.values())

    def lookup(self, instance_id: InstanceId) -> NodeRef | None:
        name = self._by_instance.get(instance_id)
        return self._by_name.get(name) if name else None

    def by_name(self, name: str) -> NodeRef | None:
        return self._by_name.get(name) or self._by_name.get(self._by_hostname.get(name, ""), None)

    def put(self, ref: NodeRef) -> None:
        old = self._by_name.get(ref.name)
        if old is not None:
            self._forget(old)
        self._by_name[ref.name] = ref
        if ref.instance_id:
            self._by_instance[ref.instance_id] = ref.name
        if ref.hostname:
            self._by_hostname[ref.hostname] = ref.name

    def remove(self, name: str) -> None:
        old = self._by_name.pop(name, None)
        if old is not None:
            self._forget(old)

    def _forget(self, ref: NodeRef) -> None:
        if ref.instance_id and self._by_instance.get(ref.instance_id) == ref.name:
            del self._by_instance[ref.instance_id]
        if ref.hostname and self._by_hostname.get(ref.hostname) == ref.name:
            del self._by_hostname[ref.hostname]

    def apply(self, node: JSON) -> None:
        self.put(node_ref(node, self._selector, self._prefix))

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def run(
        self, client: Transport, field_selector: str = "", *, backoff: watching.Backoff = watching.DEFAULT_BACKOFF
    ) -> None:
        """List, then watch from the list's resourceVersion; relist on 410 Gone or a broken watch. Forever
        (watching.list_and_watch). While relisting, lookups keep answering from what was last seen.

        `field_selector` narrows the index (IMDS mode watches only its own node, not every node in the cluster).
        """
        scope = {"fieldSelector": field_selector} if field_selector else {}
        resource = watching.Resource(
            "nodes", "/api/v1/nodes", scope, hint="grant list and watch on nodes (core API group)"
        )
        await watching.list_and_watch(
            client, resource, on_list=self._listed, on_event=self._changed_by, backoff=backoff
        )

    async def _listed(self, nodes: AsyncIterator[JSON]) -> None:
        names: set[str] = set()
        async for node in nodes:
            self.apply(node)
            names.add(node["metadata"]["name"])
        for gone in set(self._by_name) - names:
            self.remove(gone)
        metrics.NODES_INDEXED.set(len(self))
        self.synced.set()
        await self._notify()
        log.info("node index synced", extra={"nodes": len(self)})

    async def _changed_by(self, kind: str, node: JSON) -> None:
        if kind == "DELETED":
            self.remove(node["metadata"]["name"])
        else:
            self.apply(node)
        metrics.NODES_INDEXED.set(len(self))
        await self._notify()
