"""Resume from the cluster: drains a stopped spotq left unfinished start again as soon as the node index syncs.

A killed or restarted process used to resume only when SQS handed its messages back, a visibility timeout later
(half the two-minute window). The nodes' own records (records.py) say which drains were under way and until when;
the messages, when they come back, join the running drains (acting's one drain per node).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

from spotq import clock, records
from spotq.draining import DrainReport
from spotq.observability import logs, metrics
from spotq.ports import NodeLookup, NodeRef

log = logs.get("spotq.resuming")


class Resumer(Protocol):
    async def resume(self, node: NodeRef, deadline: datetime, log: logs.Context) -> DrainReport: ...


async def resume_unfinished(index: NodeLookup, actor: Resumer) -> None:
    """Once the index has synced, resume every unfinished drain whose deadline has not passed. A drain that fails
    is logged: its message, when it returns, tries again."""
    await index.synced.wait()
    now = clock.now()
    found = [(node, records.unfinished_drain(node, now)) for node in index.nodes() if node.in_scope]
    due = [(node, deadline) for node, deadline in found if deadline is not None]
    if not due:
        return
    log.info("resuming unfinished drains from the nodes' records", extra={"nodes": len(due)})

    async def one(node: NodeRef, deadline: datetime) -> None:
        context = log.bind(node=node.name, deadline=deadline.isoformat())
        metrics.DRAINS_RESUMED.inc()
        try:
            await actor.resume(node, deadline, context)
        except Exception as exc:
            context.warning("resumed drain failed; its message will try again", extra={"error": str(exc)[:300]})

    async with asyncio.TaskGroup() as group:
        for node, deadline in due:
            group.create_task(one(node, deadline))
