"""Take a node's marks off once what they were for is over: a notice that ended (a cancelled scheduled change), or a
stopped or hibernated instance that is running again."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from spotq import planning
from spotq.draining import DrainReport
from spotq.notices import Notice, StateChange
from spotq.observability import logs
from spotq.ports import EventSink, NodeLookup, NodeRef, NodeWriter, NoticeRecord


async def release_ended(
    writer: NodeWriter, events: EventSink, node: NodeRef, notice: Notice, draining: bool, log: logs.Context
) -> None:
    """`notice` ended: the node's marks of its own come off, unless a drain of the node runs (`draining`)."""
    if draining:
        log.info("notice ended while its drain runs: marks kept")
        return
    released = await writer.release_for(node, notice.kind, notice.event_id or "")
    log.info("marks released: the notice ended" if released else "notice ended; no marks of its own to release")
    if released:
        await events.node_event(node, "NoticeEnded", f"{notice.kind.value} {notice.event_id} ended: released")


async def release_returned(
    writer: NodeWriter,
    events: EventSink,
    index: NodeLookup,
    node: NodeRef,
    notice: Notice,
    returned_at: datetime,
    running: asyncio.Future[DrainReport | None] | None,
    log: logs.Context,
) -> None:
    """A stopped or hibernated instance is back: its node's marks come off where every notice on record meant
    that stop and came before `returned_at` (planning.returned_from_stop, decided again on the node as it is
    when written). A drain of the node still running (`running`: it waits for pods of a stopped kubelet) ends
    first."""
    if running is not None:
        log.info("instance returned while its drain runs: released once the drain ends")
        with contextlib.suppress(Exception):
            await asyncio.shield(running)

    def may_release(on_record: tuple[NoticeRecord, ...]) -> bool:
        return planning.returned_from_stop(on_record, returned_at)

    released = await writer.release_if(index.by_name(node.name) or node, may_release)
    if not released:
        log.info("instance returned; no marks of a stop alone to release")
        return
    log.info("marks released: the stopped instance returned")
    state = notice.state if isinstance(notice, StateChange) else ""
    await events.node_event(
        node,
        "NoticeEnded",
        f"instance {node.instance_id or ''} is {state} again since {returned_at.isoformat()}: the stop it was "
        "marked for is over; released",
    )
