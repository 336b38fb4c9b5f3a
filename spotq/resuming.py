"""Resume from the cluster: drains a stopped spotq left unfinished start again as soon as the node index syncs, and
(with several queue-mode replicas) a gone replica's drains are taken over as soon as its Lease expires.

A killed or restarted process used to resume only when SQS handed its messages back, a visibility timeout later
(half the two-minute window). The nodes' own records (records.py) say which drains were under way, until when and
(owning.py) by which replica; the messages, when they come back, join the running drains (acting's one drain per
node) or find them finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Protocol

from spotq import clock, records
from spotq.draining import DrainReport
from spotq.observability import logs, metrics
from spotq.ports import NodeLookup, NodeRef, Replicas

log = logs.get("spotq.resuming")

# How often the nodes are looked over for drains to take over, at most; a drainer's Lease expiring wakes it sooner.
TAKE_OVER_SCAN_SECONDS = 2.0


class Resumer(Protocol):
    async def resume(self, node: NodeRef, deadline: datetime, log: logs.Context) -> DrainReport | None: ...

    def handling(self, name: str) -> bool: ...

    def abandoned(self, name: str) -> bool: ...


async def resume_unfinished(index: NodeLookup, actor: Resumer, replicas: Replicas | None = None) -> None:
    """Once the index has synced, resume every unfinished drain whose deadline has not passed: with `replicas`,
    those on record as this replica's or nobody's, and then, for as long as spotq runs, those of replicas that
    are gone (take_over). A drain that fails is logged: its message, when it returns, tries again."""
    await index.synced.wait()
    now = clock.now()
    me = replicas.identity if replicas is not None else None
    found = [(node, records.unfinished_drain(node, now)) for node in index.nodes() if node.in_scope]
    due = [
        (node, deadline)
        for node, deadline in found
        if deadline is not None and (replicas is None or node.drainer in (None, me))
    ]
    if due:
        log.info("resuming unfinished drains from the nodes' records", extra={"nodes": len(due)})
    async with asyncio.TaskGroup() as group:
        for node, deadline in due:
            group.create_task(_resume(actor, node, deadline, log.bind(node=node.name, deadline=deadline.isoformat())))
        if replicas is not None:
            group.create_task(take_over(index, actor, replicas))


async def take_over(index: NodeLookup, actor: Resumer, replicas: Replicas) -> None:
    """Forever: resume the unfinished drains on record as a replica's whose Lease has expired (killed, or cut off
    from the API server), whether or not a message for the node is in this replica's hands; and this replica's
    own abandoned drains once it holds its Lease again. Each claim carries the node's resourceVersion: of the
    replicas that see the same expiry, one takes the drain over."""
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        while True:
            seen = replicas.changes
            now, at = clock.now(), loop.time()
            wake = at + TAKE_OVER_SCAN_SECONDS
            for node in index.nodes():
                drainer = node.drainer
                if not node.in_scope or drainer is None or actor.handling(node.name):
                    continue
                deadline = records.unfinished_drain(node, now)
                if deadline is None:
                    continue
                context = log.bind(node=node.name, deadline=deadline.isoformat())
                if drainer == replicas.identity:
                    if actor.abandoned(node.name) and replicas.holding():
                        group.create_task(_resume(actor, node, deadline, context))
                    continue
                expires = replicas.expires_at(drainer)
                if expires is None:
                    continue
                if expires > at:
                    wake = min(wake, expires)
                    continue
                context.info("drainer gone: taking its drain over", extra={"from": drainer})
                group.create_task(_resume(actor, node, deadline, context))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake):
                    await replicas.changed(seen)


async def _resume(actor: Resumer, node: NodeRef, deadline: datetime, context: logs.Context) -> None:
    metrics.DRAINS_RESUMED.inc()
    try:
        await actor.resume(node, deadline, context)
    except Exception as exc:
        context.warning("resumed drain failed; its message will try again", extra={"error": str(exc)[:300]})
