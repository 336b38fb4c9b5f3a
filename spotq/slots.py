"""A counting semaphore that serves waiters lowest key first (earliest deadline, most urgent priority), in
arrival order among equal keys. A holder may give its slot up before it leaves (`hold` yields the release)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
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
    async def hold(self, deadline: float) -> AsyncIterator[Callable[[], None]]:
        """Hold a slot while inside; calling what it yields gives the slot up earlier (once: leaving then, or
        calling it again, releases nothing more)."""
        if self._free > 0 and not self._gate.waiting:
            self._free -= 1
        else:
            await self._gate.wait(deadline)
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._release()

        try:
            yield release
        finally:
            release()

    def _release(self) -> None:
        if not self._gate.grant():
            self._free += 1
