"""Which replica drains a node when several consume one queue: pure decisions on the node's drain record
(ports.DrainRecord: the drainer on record and the drain's state) and whether a drainer's Lease is live.

handover.py asks before each drain: drain (the claim is this replica's), claim first (nobody live drains the node), or
wait for the replica that does (until its record says the drain ended, or its Lease expires). The claim itself is a
node PATCH carrying the resourceVersion it was decided on, so of two replicas claiming at once exactly one wins.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from spotq.ports import DrainRecord

DRAIN_STARTED = "started"
DRAIN_ENDED = frozenset({"finished", "timed-out", "blocked"})


class Step(enum.Enum):
    DRAIN = "drain"
    """A started drain on record as this replica's: run it (or join it, if it runs here already)."""
    CLAIM = "claim"
    """No live replica drains the node: claim it (drainer = this replica, drain started), then drain."""
    WAIT = "wait"
    """Another live replica drains it: wait for its record to say the drain ended, or for its Lease to expire."""
    ENDED = "ended"
    """The drain this replica waited for ended (finished, timed out or blocked): its notice shares that fate."""


def live(expires_at: float | None, now: float) -> bool:
    """A Lease not known to expire (None), or expiring later than `now` (loop time)."""
    return expires_at is None or expires_at > now


def step(record: DrainRecord, me: str, alive: Callable[[str], bool], *, waiting: bool = False) -> Step:
    """What replica `me` does next about a node whose drain record is `record`. `waiting`: it has been waiting for
    another replica's drain, so a drain no longer under way means that drain ended (not that a new one is due)."""
    if record.state == DRAIN_STARTED:
        if record.drainer == me:
            return Step.DRAIN
        if record.drainer is not None and alive(record.drainer):
            return Step.WAIT
        return Step.CLAIM  # its drainer is gone (or none is on record): take the drain over
    if record.state == "finished" or waiting:
        return Step.ENDED
    return Step.CLAIM  # never drained, or an earlier drain timed out or was blocked: a new drain, claimed first


def news(current: DrainRecord, owner: str) -> bool:
    """While waiting for `owner`'s drain: does this later version of the node's record change anything?

    The index may lag behind the claim this replica saw (a record without a drainer yet); that is no news. The
    owner's end of the drain is (it records the state; `spotq release` may have taken the drainer off), and so is
    another drainer (someone took over)."""
    if current.drainer not in (None, owner):
        return True
    return current.state in DRAIN_ENDED
