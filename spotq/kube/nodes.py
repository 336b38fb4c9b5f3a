"""Instance → node, from a Node watch keyed by `spec.providerID`: no API call per message.

The index keeps only what spotq needs per node (a few strings), so 5000 nodes cost little memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spotq import selectors
from spotq.errors import ApiError, TransientError
from spotq.kube.client import JSON, KubeClient
from spotq.notices import InstanceId
from spotq.observability import metrics

log = logging.getLogger(__name__)

_PROVIDER_ID = re.compile(r"^aws:///[^/]*/(i-[0-9a-f]+)$")


@dataclass(slots=True, frozen=True)
class NodeRef:
    name: str
    uid: str
    instance_id: InstanceId | None
    hostname: str | None
    in_scope: bool
    ready: bool
    resource_version: str
    view: JSON
    """A trimmed copy (taints, unschedulable, spotq's own labels and annotations) that marks.patch_for reads."""


def instance_of(provider_id: str | None) -> InstanceId | None:
    match = _PROVIDER_ID.match(provider_id or "")
    return InstanceId(match.group(1)) if match else None


LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def node_ref(node: JSON, selector: selectors.Selector, prefix: str = "spotq.io") -> NodeRef:
    meta = node.get("metadata", {})
    labels: dict[str, str] = meta.get("labels") or {}
    spec = node.get("spec") or {}
    view: JSON = {
        "metadata": {
            "name": meta["name"],
            "resourceVersion": meta.get("resourceVersion", ""),
            "labels": {k: v for k, v in labels.items() if k == LB_LABEL or k.startswith(prefix)},
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(prefix)},
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
        view=view,
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

    async def run(self, client: KubeClient, field_selector: str = "") -> None:
        """List, then watch from the list's resourceVersion; relist on 410 Gone or a broken watch. Forever.

        `field_selector` narrows the index (IMDS mode watches only its own node, not every node in the cluster).
        """
        scope = {"fieldSelector": field_selector} if field_selector else {}
        while True:
            try:
                version = await self._list(client, scope)
                while True:
                    version = await self._watch(client, version, scope)
            except (ApiError, TransientError) as exc:
                log.warning("node watch interrupted, relisting", extra={"error": str(exc)[:200]})
                await asyncio.sleep(1.0)

    async def _list(self, client: KubeClient, scope: dict[str, str]) -> str:
        names: set[str] = set()
        query: dict[str, str] = {"limit": "500", **scope}
        while True:
            page = await client.request("GET", "/api/v1/nodes", query=query, operation="list_nodes")
            for node in page.get("items", []):
                self.apply(node)
                names.add(node["metadata"]["name"])
            token = page.get("metadata", {}).get("continue")
            if not token:
                break
            query = {"limit": "500", "continue": token, **scope}
        for gone in set(self._by_name) - names:
            self.remove(gone)
        metrics.NODES_INDEXED.set(len(self))
        self.synced.set()
        await self._notify()
        log.info("node index synced", extra={"nodes": len(self)})
        return str(page.get("metadata", {}).get("resourceVersion", ""))

    async def _watch(self, client: KubeClient, version: str, scope: dict[str, str]) -> str:
        query = {"resourceVersion": version, "timeoutSeconds": "300", **scope}
        async for event in client.watch("/api/v1/nodes", query, operation="watch_nodes"):
            kind = event.get("type")
            obj: dict[str, Any] = event.get("object") or {}
            if kind == "ERROR":
                raise ApiError(int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", "")))
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind in ("ADDED", "MODIFIED"):
                self.apply(obj)
            elif kind == "DELETED":
                self.remove(obj["metadata"]["name"])
            else:
                continue
            metrics.NODES_INDEXED.set(len(self))
            await self._notify()
        return version
