"""A token bucket shared by every caller of one API: `qps` tokens a second, up to `burst` saved.

When callers must wait, the most urgent goes first: a node's taint before another node's eviction, an eviction
before an Event. Within one priority, waiters are served in arrival order. Taints may also borrow: up to `burst`
tokens ahead, repaid by everything else waiting longer, so a wave of interruptions is marked at once while the
average rate still stays within `qps`.
"""

from __future__ import annotations

import asyncio
import enum

from spotq.gate import Gate


class Priority(enum.IntEnum):
    """Lower is served first when the bucket is empty."""

    MARK = 0  # taint + cordon: until it lands, the scheduler may still place pods on the node
    WORK = 1  # drains: lists, watches, evictions
    NOTE = 2  # Kubernetes Events: useful to people, never urgent


class TokenBucket:
    def __init__(self, qps: float, burst: int) -> None:
        self._rate = qps
        self._capacity = float(max(burst, 1))
        self._tokens = self._capacity
        self._stamp: float | None = None
        self._gate: Gate[int] = Gate(hand_on=self._give_back)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return self._gate.waiting

    def _refill(self, now: float) -> None:
        if self._stamp is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self, priority: Priority = Priority.WORK) -> None:
        loop = asyncio.get_running_loop()
        self._refill(loop.time())
        if priority is Priority.MARK and self._tokens >= 1.0 - self._capacity:
            self._tokens -= 1.0
            return
        if not self._gate.waiting and self._tokens >= 1.0:
            self._tokens -= 1.0
            return
        with self._gate.queued(int(priority)) as ticket:
            self._schedule(loop)
            await ticket

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._gate.waiting:
            wait = max(0.0, (1.0 - self._tokens) / self._rate)
            self._timer = loop.call_later(wait, self._grant, loop)

    def _grant(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        self._serve()
        self._schedule(loop)

    def _serve(self) -> None:
        while self._tokens >= 1.0 and self._gate.grant():
            self._tokens -= 1.0

    def _give_back(self) -> None:
        self._tokens += 1.0
        self._serve()
