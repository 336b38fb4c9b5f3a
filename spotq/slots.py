"""A counting semaphore that serves waiters lowest key first (earliest deadline, most urgent priority), in
arrival order among equal keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from spotq.gate import Gate


class DeadlineSlots:
    def __init__(self, size: int) -> None:
        self._free = size
        self._gate: Gate[float] = Gate(hand_on=self._release)

    @property
    def waiting(self) -> int:
        return self._gate.waiting

    @asynccontextmanager
    async def hold(self, deadline: float) -> AsyncIterator[None]:
        if self._free > 0 and not self._gate.waiting:
            self._free -= 1
        else:
            await self._gate.wait(deadline)
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        if not self._gate.grant():
            self._free += 1
