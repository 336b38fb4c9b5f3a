"""Undo what is no longer true: a rebalance recommendation's marks come off when no interruption followed.

A rebalance recommendation says an instance is at elevated risk, not that it goes. Left alone, its taint (or, at
the cordon level, its cordon) would stay for the node's life (NTH #321, #458). After
SPOTQ_POLICY__REBALANCE_EXPIRY_SECONDS a node whose only notice on record is that recommendation gets spotq's
marks released, through the same precondition-guarded patch as a cancelled scheduled change: a Spot warning
recorded meanwhile keeps every mark.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from spotq import clock
from spotq.notices import Kind
from spotq.observability import logs, metrics
from spotq.ports import EventSink, NodeLookup, NodeRef, NodeWriter, NoticeRecord

log = logs.get("spotq.expiring")


def expired_recommendation(node: NodeRef, now: datetime, after: timedelta) -> NoticeRecord | None:
    """The node's rebalance record, when it is the only notice on record and older than `after` (pure)."""
    if len(node.records) != 1:
        return None
    (record,) = node.records
    if record.kind is not Kind.REBALANCE_RECOMMENDATION or record.noticed_at is None or record.id is None:
        return None
    return record if now - record.noticed_at >= after else None


def sweep_interval(after: timedelta) -> float:
    """How often to look: a tenth of the expiry, between 1 s and 60 s."""
    return min(60.0, max(1.0, after.total_seconds() / 10))


async def expire_recommendations(
    index: NodeLookup,
    writer: NodeWriter,
    events: EventSink,
    after: timedelta,
    *,
    interval: float | None = None,
    now: Callable[[], datetime] = clock.now,
) -> None:
    """Forever: release the marks of recommendations that expired. A failed release is logged and tried again."""
    await index.synced.wait()
    every = sweep_interval(after) if interval is None else interval
    while True:
        when = now()
        for node in index.nodes():
            record = expired_recommendation(node, when, after)
            if record is not None and record.id is not None:
                await _release(node, record.id, writer, events)
        await asyncio.sleep(every)


async def _release(node: NodeRef, notice_id: str, writer: NodeWriter, events: EventSink) -> None:
    context = log.bind(node=node.name, notice_id=notice_id)
    try:
        released = await writer.release_for(node, Kind.REBALANCE_RECOMMENDATION, notice_id)
    except Exception as exc:
        metrics.MARKS_EXPIRED.labels(result="failed").inc()
        context.warning("releasing an expired rebalance recommendation failed", extra={"error": str(exc)[:300]})
        return
    if not released:
        return  # another notice was recorded meanwhile, or the marks are gone already
    metrics.MARKS_EXPIRED.labels(result="released").inc()
    context.info("rebalance recommendation expired with no interruption: marks released")
    await events.node_event(
        node, "RebalanceExpired", f"rebalance recommendation {notice_id} expired with no interruption: released"
    )
