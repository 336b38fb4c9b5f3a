"""What spotq records on a node about its own work, read back: the notices on record and the drain's state.

acting writes these annotations (kube.marks turns them into a PATCH); reading them lets a redelivered message, a
second notice or a restarted process act on what changed only, and lets an interrupted drain be resumed from the
cluster instead of from SQS. Pure: reads the node's trimmed view from the index.
"""

from __future__ import annotations

import json
from datetime import datetime

from spotq.kube.nodes import NodeRef
from spotq.notices import Kind

DRAIN_STARTED = "started"
DRAIN_FINISHED = "finished"


def notice_key(prefix: str, kind: Kind) -> str:
    """The annotation holding the first notice of this kind that acted on the node."""
    return f"{prefix}/{kind.value.replace('_', '-')}"


def drain_key(prefix: str) -> str:
    return f"{prefix}/drain"


def node_annotations(node: NodeRef) -> dict[str, str]:
    found: dict[str, str] = (node.view.get("metadata") or {}).get("annotations") or {}
    return found


def drain_state(node: NodeRef, prefix: str) -> str | None:
    """started, finished, timed-out or blocked; None when spotq never drained the node."""
    return node_annotations(node).get(drain_key(prefix))


def notice_id(node: NodeRef, prefix: str, kind: Kind) -> str | None:
    """The id of the notice of this kind on record, if any."""
    record = _record(node_annotations(node).get(notice_key(prefix, kind)))
    value = record.get("id")
    return value if isinstance(value, str) else None


def earliest_deadline(node: NodeRef, prefix: str) -> datetime | None:
    """The earliest deadline among the notices on record: the drain's deadline (each joining notice may only
    bring it forward)."""
    found: list[datetime] = []
    for kind in Kind:
        record = _record(node_annotations(node).get(notice_key(prefix, kind)))
        value = record.get("deadline")
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                continue
            if when.tzinfo is not None:
                found.append(when)
    return min(found) if found else None


def unfinished_drain(node: NodeRef, prefix: str, now: datetime) -> datetime | None:
    """The deadline of a drain spotq started and did not finish (its process stopped), if it has not passed."""
    if drain_state(node, prefix) != DRAIN_STARTED:
        return None
    deadline = earliest_deadline(node, prefix)
    return deadline if deadline is not None and deadline > now else None


def _record(value: str | None) -> dict[str, object]:
    if not value:
        return {}
    try:
        record = json.loads(value)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
