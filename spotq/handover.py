"""Whose drain of a node it is, across queue-mode replicas, acted on: claim the drain (owning.py decides), wait for
another live replica's drain to end, take it over once that replica's Lease expires, and stop a running drain once
it is no longer this replica's (fencing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from spotq import owning
from spotq.draining import DrainDeadline
from spotq.errors import TransientError
from spotq.observability import logs
from spotq.ports import DrainRecord, NodeLookup, NodeRef, NodeWriter, Replicas
from spotq.side_tasks import beside, first_of

# A replica waiting for another's drain stops waiting this long after its own notice's deadline: the drainer has had
# that long to record the drain's end, and the waiting message is then done (a drain past its deadline is over).
OWNER_RECORD_GRACE_SECONDS = 15.0

Beats = Callable[[], Coroutine[Any, Any, None]]
"""Heartbeats for a lifecycle hook kept open meanwhile (hooks.heartbeats), started anew for each wait."""


async def own(
    replicas: Replicas,
    writer: NodeWriter,
    index: NodeLookup,
    node: NodeRef,
    record: DrainRecord,
    due: DrainDeadline,
    beats: Beats | None,
    log: logs.Context,
    *,
    wait: bool,
) -> bool:
    """True once the node's drain is this replica's to run: on record as its own, or claimed now (nobody live
    drains it). While another live replica drains it, wait (`wait`; else False at once) until that drain's
    end is on record (False: this notice shares its fate), or that replica's Lease expires (claim, then True).
    """
    loop = asyncio.get_running_loop()
    me = replicas.identity

    def alive(holder: str) -> bool:
        return owning.live(replicas.expires_at(holder), loop.time())

    waiting = False
    while True:
        step = owning.step(record, me, alive, waiting=waiting)
        if step is owning.Step.DRAIN:
            return True
        if step is owning.Step.ENDED:
            log.info("drain by another replica ended", extra={"drainer": record.drainer, "drain": record.state})
            return False
        if step is owning.Step.CLAIM:
            if not replicas.holding():
                raise TransientError("this replica's Lease is not being renewed: it claims no drain")
            gone = record.drainer if record.state == owning.DRAIN_STARTED else None

            def may_claim(current: DrainRecord, waited: bool = waiting) -> bool:
                return owning.step(current, me, alive, waiting=waited) is owning.Step.CLAIM

            record = await writer.claim_drain(index.by_name(node.name) or node, me, may_claim)
            if record.drainer == me and record.state == owning.DRAIN_STARTED:
                if gone is not None:
                    log.info("drain taken over from a gone replica", extra={"from": gone})
                return True
            continue  # another replica claimed it first: decide again on what the node now says
        if not wait:
            return False
        if not waiting:
            log.info("another replica drains the node: waiting for it", extra={"drainer": record.drainer})
        waiting = True
        async with beside() as group:
            heartbeats = group.create_task(beats()) if beats else None
            found = await await_owner(replicas, index, node.name, record, due)
            if heartbeats is not None:
                heartbeats.cancel()
        if found is None:
            log.warning("gave up waiting for another replica's drain: the deadline passed")
            return False
        record = found


async def await_owner(
    replicas: Replicas, index: NodeLookup, name: str, record: DrainRecord, due: DrainDeadline
) -> DrainRecord | None:
    """Wait until the node's record says something new about the drain `record.drainer` runs (owning.news), or
    that replica's Lease expires (then `record` again: it is now a gone replica's). None: our own deadline
    passed, with OWNER_RECORD_GRACE_SECONDS for the drainer to record its end."""
    owner = record.drainer or ""
    loop = asyncio.get_running_loop()

    def current() -> DrainRecord:
        found = index.by_name(name)
        return DrainRecord.of(found) if found is not None else DrainRecord()

    def news() -> bool:
        return owning.news(current(), owner)

    while True:
        seen = replicas.changes  # before looking: a Lease released while the waits below start still wakes them
        now = loop.time()
        give_up = due.at + OWNER_RECORD_GRACE_SECONDS
        if news():
            return current()
        expires = replicas.expires_at(owner)
        if expires is not None and expires <= now:
            return record
        if now >= give_up:
            return None
        # Renewals wake nobody: at the expiry seen now, look again (renewed meanwhile: wait on).
        until = give_up if expires is None else min(give_up, expires)
        await first_of(index.wait_for(news), replicas.changed(seen), until=until)


async def fence(replicas: Replicas, index: NodeLookup, name: str) -> None:
    """Raise once this replica may no longer drain the node: its own Lease may look expired to the others, or
    the node's record names another drainer (it took the drain over). The drain stops; its message is retried
    and finds out who drains the node now."""
    me = replicas.identity

    def taken() -> bool:
        found = index.by_name(name)
        return found is not None and found.drainer not in (None, me)

    await first_of(replicas.lost(), index.wait_for(taken), until=None)
    raise TransientError(
        "stopped draining: "
        + ("another replica took the drain over" if taken() else "this replica's Lease was not renewed in time")
    )
