"""A token bucket shared by every caller of one API: `qps` tokens a second, up to `burst` saved.

When callers must wait, the most urgent goes first: a node's taint before another node's eviction, an eviction
before an Event. Within one priority, waiters are served in arrival order. Taints may also borrow: up to `burst`
tokens ahead, repaid by everything else waiting longer, so a wave of interruptions is marked at once while the
average rate still stays within `qps`.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools


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
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

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
        if not self._waiters and self._tokens >= 1.0:
            self._tokens -= 1.0
            return
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._order), future))
        self._schedule(loop)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._tokens += 1.0  # granted just as we were cancelled: give the token back
            raise

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiters:
            wait = max(0.0, (1.0 - self._tokens) / self._rate)
            self._timer = loop.call_later(wait, self._grant, loop)

    def _grant(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        while self._waiters and self._tokens >= 1.0:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                self._tokens -= 1.0
                future.set_result(None)
        self._schedule(loop)
