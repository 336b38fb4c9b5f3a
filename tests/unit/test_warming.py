"""kube/warming.py: each round holds `connections` requests in flight at once (one connection each), a round is left
out when spotq's own requests since the last one were as many, and a failing API server costs one log line per
streak, never the task. The real API server and real connections: tests/integration/test_warm_connections.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import pytest

from spotq.errors import TransientError
from spotq.kube import warming
from spotq.ratelimit import Priority


class Client:
    """Answers once every request of a round is in flight (a round that sent them one by one would never end)."""

    def __init__(self, per_round: int, *, fail: bool = False) -> None:
        self.requests_sent = 0
        self.per_round = per_round
        self.fail = fail
        self.in_flight = 0
        self.most_in_flight = 0
        self.operations: list[tuple[str, str, Priority]] = []
        self._all_in = asyncio.Event()

    async def request(self, method: str, path: str, *, operation: str, priority: Priority = Priority.WORK) -> object:
        self.requests_sent += 1
        self.operations.append((method, path, priority))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.per_round:
            self._all_in.set()
        try:
            await asyncio.wait_for(self._all_in.wait(), 1.0)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._all_in.clear()
        if self.fail:
            raise TransientError("warm_connections: ClientConnectorError: refused")
        return {"major": "1"}


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_round_holds_every_connection_at_once_at_the_least_urgent_priority() -> None:
    client = Client(per_round=6)
    assert await warming.warm(client, 6) == 6
    assert client.most_in_flight == 6
    assert set(client.operations) == {("GET", "/version", Priority.NOTE)}


async def test_rounds_repeat_while_quiet_and_are_left_out_while_spotq_is_busy() -> None:
    client = Client(per_round=4)
    task = asyncio.create_task(warming.keep_warm(client, 4, round_seconds=0.05))
    await asyncio.sleep(0.12)
    quiet = len(client.operations)
    assert quiet >= 8  # the first round at once, then at least one more
    # A wave: spotq's own requests, more than a round's worth every round.
    for _ in range(30):
        client.requests_sent += 10
        await asyncio.sleep(0.01)
    busy = len(client.operations) - quiet
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert busy <= 4  # at most the round that was already due when the wave began


async def test_a_failing_api_server_is_logged_once_per_streak_and_never_ends_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client(per_round=3, fail=True)
    caplog.set_level(logging.INFO, logger="spotq.kube.warming")
    task = asyncio.create_task(warming.keep_warm(client, 3, round_seconds=0.02))
    await asyncio.sleep(0.15)
    assert not task.done()
    rounds = len(client.operations) // 3
    assert rounds >= 3
    lines = [r for r in caplog.records if "could not keep every API server connection open" in r.getMessage()]
    assert len(lines) == 1
    client.fail = False
    good = len(client.operations)
    await until(lambda: len(client.operations) >= good + 6)  # a whole good round went by
    client.fail = True
    failed = len(client.operations)
    await until(lambda: len(client.operations) >= failed + 6)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    lines = [r for r in caplog.records if "could not keep every API server connection open" in r.getMessage()]
    assert len(lines) == 2  # a new streak after a good round


async def test_no_connections_kept_sends_nothing() -> None:
    client = Client(per_round=1)
    await asyncio.wait_for(warming.keep_warm(client, 0), 1.0)
    assert client.operations == []
