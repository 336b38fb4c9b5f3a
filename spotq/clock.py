"""spotq's two clocks and the one place they meet.

Every wait and timer inside the process runs on the event loop's clock (`loop_now`, `asyncio.timeout_at`), so a
fake loop clock drives them all in tests. The wall clock (`now`) is only for times that come from or go to the
outside: notice and event times, deadlines on record in annotations, Events, logs. A notice is received at one
`Instant` read on both clocks; its wall-clock deadline becomes loop time from that instant (`Instant.loop_time`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime


def now() -> datetime:
    """The wall clock, for timestamps to and from the outside."""
    return datetime.now(UTC)


def loop_now() -> float:
    """The loop's clock, for every wait, timer and age inside the process."""
    return asyncio.get_running_loop().time()


@dataclass(frozen=True)
class Instant:
    """One moment read on both clocks: when a notice was received."""

    wall: datetime
    loop: float

    def loop_time(self, when: datetime) -> float:
        """The wall-clock time `when` in loop time, measured from this instant: a later step of the wall clock
        (NTP) does not move it."""
        return self.loop + (when - self.wall).total_seconds()


def instant() -> Instant:
    return Instant(now(), loop_now())


def loop_deadline(when: datetime) -> float:
    """`when` in loop time, measured from this moment: where no receipt instant is at hand (a drain resumed from
    a node's record)."""
    return instant().loop_time(when)
