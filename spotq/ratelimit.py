"""A token bucket shared by every caller of one API: `qps` tokens a second, up to `burst` saved."""

from __future__ import annotations

import asyncio


class TokenBucket:
    def __init__(self, qps: float, burst: int) -> None:
        self._rate = qps
        self._capacity = float(max(burst, 1))
        self._tokens = self._capacity
        self._stamp: float | None = None
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in arrival order
            loop = asyncio.get_running_loop()
            now = loop.time()
            if self._stamp is not None:
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / self._rate
                await asyncio.sleep(wait)
                self._stamp = loop.time()
                self._tokens = 0.0
            else:
                self._tokens -= 1.0
