"""What a node's records (ports.NoticeRecord, read by the index) say about spotq's own work there (pure).

Reading them lets a redelivered message, a second notice or a restarted process act on what changed only, and
lets an interrupted drain be resumed from the cluster instead of from SQS.
"""

from __future__ import annotations

from datetime import datetime

from spotq.ports import NodeRef

DRAIN_STARTED = "started"
DRAIN_FINISHED = "finished"


def earliest_deadline(node: NodeRef) -> datetime | None:
    """The earliest deadline among the notices on record: the drain's (a joining notice only brings it forward)."""
    deadlines = [record.deadline for record in node.records if record.deadline is not None]
    return min(deadlines) if deadlines else None


def unfinished_drain(node: NodeRef, now: datetime) -> datetime | None:
    """The deadline of a drain spotq started and did not finish (its process stopped), if it has not passed."""
    if node.drain_state != DRAIN_STARTED:
        return None
    deadline = earliest_deadline(node)
    return deadline if deadline is not None and deadline > now else None
