"""The two clocks meet in one place: a notice's receipt instant turns its wall-clock deadlines into loop time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from spotq import clock


def test_a_wall_clock_time_is_loop_time_measured_from_the_instant() -> None:
    received = clock.Instant(datetime(2025, 6, 3, 14, 22, 5, tzinfo=UTC), loop=1000.0)
    assert received.loop_time(received.wall + timedelta(seconds=110)) == 1110.0
    assert received.loop_time(received.wall - timedelta(seconds=5)) == 995.0  # already past


async def test_an_instant_reads_the_loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: 42.0)
    wall = datetime.now(UTC)
    monkeypatch.setattr(clock, "now", lambda: wall)
    assert clock.instant() == clock.Instant(wall, 42.0)
    assert clock.loop_deadline(wall + timedelta(seconds=120)) == 162.0
