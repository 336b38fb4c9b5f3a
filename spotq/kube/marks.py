"""Durable marks on a node — taint, cordon, load-balancer exclusion, notice annotations — in one PATCH.

The patch carries the resourceVersion it was computed from, so a concurrent writer makes it fail with 409 instead of
silently losing a taint; we then read the node again and recompute. A node already marked gets no request at all.
The same precondition makes a drain's claim (the drainer annotation, written with the drain's start) exclusive:
of two replicas claiming one node at once, one PATCH lands and the other is a 409, re-read and re-decided.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spotq.errors import ApiError, TransientError
from spotq.kube import records
from spotq.kube.nodes import LB_LABEL
from spotq.kube.transport import JSON, Transport
from spotq.notices import Kind
from spotq.ports import DrainRecord, DrainState, NodeMarks, NodeRef, NoticeRecord
from spotq.ratelimit import Priority

CONFLICT_RETRIES = 8


@dataclass(frozen=True)
class Marks:
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)
    cordon: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    """Written only where absent: the first notice that acted stays on record."""
    overwrite_annotations: dict[str, str] = field(default_factory=dict)
    owner_key: str = ""
    """If set, an annotation listing what spotq itself changed (cordon, labels): `spotq release` undoes only that."""
    claim: dict[str, str] = field(default_factory=dict)
    claim_with: str = ""
    """`claim` is written exactly when the annotation `claim_with` is (where absent): the replica that records a
    drain's start records itself as its drainer in the same PATCH."""
    record_details: dict[str, str] = field(default_factory=dict)
    """Record annotation → detail: set in a record already on the node whose detail differs (id and times kept)."""


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
    if marks.claim_with and marks.claim_with in new_annotations:
        new_annotations |= marks.claim
    for key, detail in marks.record_details.items():
        rewritten = _with_detail(annotations.get(key), detail) if key not in new_annotations else None
        if rewritten is not None:
            new_annotations[key] = rewritten
    cordon = marks.cordon and not spec.get("unschedulable", False)
    owned = (["cordon"] if cordon else []) + [f"label:{k}" for k in new_labels if k not in labels]
    if marks.owner_key and owned:
        before = set(filter(None, annotations.get(marks.owner_key, "").split(",")))
        new_annotations[marks.owner_key] = ",".join(sorted(before | set(owned)))
    if not (added or new_labels or new_annotations or cordon):
        return None
    # The resourceVersion makes a concurrent writer's change a 409 instead of a lost taint (the taint list is
    # replaced whole) or a second "first notice" on record. Overwriting spotq's own drain state needs neither,
    # and without it the state written after a drain cannot conflict with the node's other updates meanwhile.
    only_overwrites = not (added or new_labels or cordon) and set(new_annotations) <= set(marks.overwrite_annotations)
    patch: JSON = {"metadata": {} if only_overwrites else {"resourceVersion": meta.get("resourceVersion", "")}}
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


def _with_detail(recorded: str | None, detail: str) -> str | None:
    """The record `recorded` with `detail`, or None where it has it already (or is absent or unreadable)."""
    try:
        doc = json.loads(recorded) if recorded is not None else None
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("detail") == detail:
        return None
    return json.dumps({**doc, "detail": detail})


def marks_for(marks: NodeMarks, prefix: str) -> Marks:
    """What a notice asks of a node (ports.NodeMarks), in annotation keys and labels (pure)."""
    annotations: dict[str, str] = {}
    if marks.record is not None:
        annotations[records.notice_key(prefix, marks.record.kind)] = records.encode(marks.record)
    if marks.drain_started:
        # Only where no drain is on record yet: a repeated notice for a drained node changes nothing.
        annotations[records.drain_key(prefix)] = "started"
    claim = {records.drainer_key(prefix): marks.drainer} if marks.drain_started and marks.drainer else {}
    details: dict[str, str] = {}
    if marks.record is not None and marks.record.detail is not None and marks.overrides_detail:
        details[records.notice_key(prefix, marks.record.kind)] = marks.record.detail
    return Marks(
        taints=marks.taints,
        cordon=marks.cordon,
        labels={LB_LABEL: "true"} if marks.exclude_from_load_balancers else {},
        annotations=annotations,
        owner_key=records.owner_key(prefix),
        claim=claim,
        claim_with=records.drain_key(prefix) if claim else "",
        record_details=details,
    )


def claim_patch(node: JSON, prefix: str, drainer: str, may_claim: Callable[[DrainRecord], bool]) -> JSON | None:
    """The merge patch that records `drainer` as draining the node and the drain as started, if `may_claim` holds
    for the node's record as `node` has it (pure). Always with the resourceVersion: the claim is exclusive."""
    meta = node.get("metadata") or {}
    if not may_claim(records.drain_record(meta.get("annotations") or {}, prefix)):
        return None
    claim = {records.drainer_key(prefix): drainer, records.drain_key(prefix): "started"}
    return {"metadata": {"resourceVersion": meta.get("resourceVersion", ""), "annotations": claim}}


def drain_record_after(node: JSON, patch: JSON | None, prefix: str) -> DrainRecord:
    """The drain's record once `patch` (None: nothing) is applied to `node` (pure)."""
    annotations: Mapping[str, str] = (node.get("metadata") or {}).get("annotations") or {}
    if patch is not None:
        written = (patch.get("metadata") or {}).get("annotations") or {}
        annotations = {**annotations, **written}
        annotations = {k: v for k, v in annotations.items() if v is not None}
    return records.drain_record(annotations, prefix)


class NodeMarker:
    """ports.NodeWriter over the API server; starts from the index's trimmed copy to save a GET."""

    def __init__(self, client: Transport, prefix: str = "spotq.io") -> None:
        self._client = client
        self._prefix = prefix

    async def mark(self, node: NodeRef, marks: NodeMarks) -> tuple[bool, DrainRecord]:
        wanted = marks_for(marks, self._prefix)
        patch, seen = await _patch_node(
            self._client, node.name, lambda current: patch_for(current, wanted), node.cached
        )
        return patch is not None, drain_record_after(seen, patch, self._prefix)

    async def claim_drain(self, node: NodeRef, drainer: str, may_claim: Callable[[DrainRecord], bool]) -> DrainRecord:
        def claim(current: JSON) -> JSON | None:
            return claim_patch(current, self._prefix, drainer, may_claim)

        patch, seen = await _patch_node(self._client, node.name, claim, node.cached)
        return drain_record_after(seen, patch, self._prefix)

    async def record_drain(self, node: NodeRef, state: DrainState) -> None:
        overwrite = Marks(overwrite_annotations={records.drain_key(self._prefix): state})
        await apply(self._client, node.name, overwrite, node.cached)

    async def release_for(self, node: NodeRef, kind: Kind, notice_id: str) -> bool:
        """Take spotq's marks off a node that carries them for this one notice only (it was cancelled)."""
        key = records.notice_key(self._prefix, kind)

        def undo(current: JSON) -> JSON | None:
            return release_patch_for(current, self._prefix, key, notice_id)

        return await patch_node(self._client, node.name, undo, node.cached)

    async def release_if(self, node: NodeRef, may_release: Callable[[tuple[NoticeRecord, ...]], bool]) -> bool:
        """Take spotq's marks off the node where `may_release` holds for its notices on record (a stopped instance
        returned); decided on the node as each attempt reads it, written with its resourceVersion."""

        def undo(current: JSON) -> JSON | None:
            return release_patch_if(current, self._prefix, may_release)

        return await patch_node(self._client, node.name, undo, node.cached)


def release_patch(node: JSON, prefix: str) -> JSON | None:
    """The merge patch that takes spotq's marks off `node` (pure): its taints and annotations always, the cordon
    and labels only where spotq's owner record says spotq set them (an operator's own cordon stays)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    annotations: dict[str, str] = meta.get("annotations") or {}
    owned = set(filter(None, annotations.get(f"{prefix}/owned", "").split(",")))
    taints = list(spec.get("taints") or [])
    kept = [t for t in taints if not str(t.get("key", "")).startswith(f"{prefix}/")]
    patch: JSON = {"metadata": {"resourceVersion": meta.get("resourceVersion", "")}}
    spec_patch: JSON = {}
    if len(kept) != len(taints):
        spec_patch["taints"] = kept
    if "cordon" in owned and spec.get("unschedulable"):
        spec_patch["unschedulable"] = None  # merge patch: null removes the field, i.e. schedulable again
    labels = {item.removeprefix("label:"): None for item in owned if item.startswith("label:")}
    labels = {k: v for k, v in labels.items() if k in (meta.get("labels") or {})}
    ours = {k: None for k in annotations if k.startswith(f"{prefix}/")}
    if spec_patch:
        patch["spec"] = spec_patch
    if labels:
        patch["metadata"]["labels"] = labels
    if ours:
        patch["metadata"]["annotations"] = ours
    return patch if (spec_patch or labels or ours) else None


# spotq's own bookkeeping annotations, beside the notice records.
_BOOKKEEPING = ("drain", "owned", "drainer")


def release_patch_for(node: JSON, prefix: str, notice_key: str, notice_id: str) -> JSON | None:
    """release_patch, but only where the one notice on record is `notice_key` with id `notice_id` (pure): a node
    also marked for another notice (a Spot warning, another scheduled change) keeps every mark."""
    annotations: dict[str, str] = (node.get("metadata") or {}).get("annotations") or {}
    bookkeeping = {f"{prefix}/{name}" for name in _BOOKKEEPING}
    records = {k: v for k, v in annotations.items() if k.startswith(f"{prefix}/") and k not in bookkeeping}
    if set(records) != {notice_key}:
        return None
    try:
        recorded = json.loads(records[notice_key]).get("id")
    except (ValueError, AttributeError):
        return None
    return release_patch(node, prefix) if recorded == notice_id else None


def release_patch_if(node: JSON, prefix: str, may_release: Callable[[tuple[NoticeRecord, ...]], bool]) -> JSON | None:
    """release_patch, but only where `may_release` holds for the notices on record on `node` (pure). A spotq
    annotation beside the bookkeeping that is no readable notice record keeps every mark: it may be a notice."""
    annotations: dict[str, str] = (node.get("metadata") or {}).get("annotations") or {}
    bookkeeping = {f"{prefix}/{name}" for name in _BOOKKEEPING}
    others = {k for k in annotations if k.startswith(f"{prefix}/") and k not in bookkeeping}
    on_record = records.read(annotations, prefix)
    if len(on_record) != len(others) or not may_release(on_record):
        return None
    return release_patch(node, prefix)


async def apply(client: Transport, node_name: str, marks: Marks, cached: JSON | None = None) -> bool:
    """Make `marks` true on the node. Returns True if a write was needed. Raises on persistent failure."""
    return await patch_node(client, node_name, lambda node: patch_for(node, marks), cached)


async def patch_node(
    client: Transport, node_name: str, compute: Callable[[JSON], JSON | None], cached: JSON | None = None
) -> bool:
    """PATCH what `compute` derives from the node, retrying on 409 with a fresh read. True if it wrote."""
    patch, _ = await _patch_node(client, node_name, compute, cached)
    return patch is not None


async def _patch_node(
    client: Transport, node_name: str, compute: Callable[[JSON], JSON | None], cached: JSON | None
) -> tuple[JSON | None, JSON]:
    """patch_node, returning the patch written (None: none was needed) and the node it was computed from."""
    node = cached
    for _ in range(CONFLICT_RETRIES):
        if node is None:
            node = await client.request(
                "GET", f"/api/v1/nodes/{node_name}", operation="get_node", priority=Priority.MARK
            )
        patch = compute(node)
        if patch is None:
            return None, node
        try:
            await client.request(
                "PATCH",
                f"/api/v1/nodes/{node_name}",
                body=patch,
                content_type="application/merge-patch+json",
                operation="patch_node",
                priority=Priority.MARK,
            )
            return patch, node
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = None  # someone else wrote first: read again and recompute
    raise TransientError(f"node {node_name}: still conflicting after {CONFLICT_RETRIES} attempts")
