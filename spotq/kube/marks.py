"""Durable marks on a node — taint, cordon, load-balancer exclusion, notice annotations — in one PATCH.

The patch carries the resourceVersion it was computed from, so a concurrent writer makes it fail with 409 instead of
silently losing a taint; we then read the node again and recompute. A node already marked gets no request at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotq.errors import ApiError, TransientError
from spotq.kube.client import JSON, KubeClient
from spotq.kube.nodes import NodeRef

CONFLICT_RETRIES = 8


@dataclass(frozen=True)
class Marks:
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)
    cordon: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    """Written only where absent: the first notice that acted stays on record."""
    overwrite_annotations: dict[str, str] = field(default_factory=dict)


def patch_for(node: JSON, marks: Marks) -> JSON | None:
    """The merge patch that adds `marks` to `node`, or None if it already carries them (pure)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    taints: list[dict[str, Any]] = list(spec.get("taints") or [])
    have = {(t.get("key"), t.get("effect")) for t in taints}
    added = [
        {"key": key, "value": value, "effect": effect}
        for key, value, effect in marks.taints
        if (key, effect) not in have
    ]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    new_labels = {k: v for k, v in marks.labels.items() if labels.get(k) != v}
    new_annotations = {k: v for k, v in marks.annotations.items() if k not in annotations}
    new_annotations |= {k: v for k, v in marks.overwrite_annotations.items() if annotations.get(k) != v}
    cordon = marks.cordon and not spec.get("unschedulable", False)
    if not (added or new_labels or new_annotations or cordon):
        return None
    patch: JSON = {"metadata": {"resourceVersion": meta.get("resourceVersion", "")}}
    if new_labels:
        patch["metadata"]["labels"] = new_labels
    if new_annotations:
        patch["metadata"]["annotations"] = new_annotations
    if added or cordon:
        patch["spec"] = {}
        if added:
            patch["spec"]["taints"] = taints + added  # merge patch replaces lists: send the whole list
        if cordon:
            patch["spec"]["unschedulable"] = True
    return patch


class NodeMarker:
    """acting.NodeWriter over the API server; starts from the index's trimmed view to save a GET."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def mark(self, node: NodeRef, marks: Marks) -> bool:
        return await apply(self._client, node.name, marks, node.view)


async def apply(client: KubeClient, node_name: str, marks: Marks, cached: JSON | None = None) -> bool:
    """Make `marks` true on the node. Returns True if a write was needed. Raises on persistent failure."""
    node = cached
    for _ in range(CONFLICT_RETRIES):
        if node is None:
            node = await client.request("GET", f"/api/v1/nodes/{node_name}", operation="get_node")
        patch = patch_for(node, marks)
        if patch is None:
            return False
        try:
            await client.request(
                "PATCH",
                f"/api/v1/nodes/{node_name}",
                body=patch,
                content_type="application/merge-patch+json",
                operation="patch_node",
            )
            return True
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = None  # someone else wrote first: read again and recompute
    raise TransientError(f"node {node_name}: still conflicting after {CONFLICT_RETRIES} attempts")
