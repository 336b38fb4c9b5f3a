"""Wall-clock deadlines from notices become loop time here, once, for `asyncio.timeout_at`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def loop_deadline(when: datetime) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (when - now()).total_seconds()
