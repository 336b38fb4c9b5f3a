"""The one priority gate under the drain slots, the rate limiter and the PDB budgets: waiters served lowest key
first, in arrival order among equal keys.

What a grant hands out (a slot, a token, room under a budget) is the owner's business; the gate keeps the order and
makes sure that a grant whose waiter is cancelled in the same instant is handed on, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=_Ordered)


def granted(ticket: asyncio.Future[bool]) -> bool:
    """The waiter was let in with a grant (not by `open`, not yet undecided, not cancelled)."""
    return ticket.done() and not ticket.cancelled() and ticket.result()


class Gate(Generic[K]):
    def __init__(self, hand_on: Callable[[], None]) -> None:
        """`hand_on` passes on a grant whose waiter left by an exception (a cancellation) as it came: it releases
        the slot, returns the token, frees the room, so that the next waiter is not kept waiting by a departed one."""
        self._hand_on = hand_on
        self._waiters: list[tuple[K, int, asyncio.Future[bool]]] = []
        self._arrival = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def wait(self, key: K) -> bool:
        """Wait in line for a grant: True when granted, False when let through by `open`."""
        with self.queued(key) as ticket:
            return await ticket

    @contextlib.contextmanager
    def queued(self, key: K) -> Iterator[asyncio.Future[bool]]:
        """In line while inside: await the ticket however suits (e.g. with a timeout). Leaving undecided takes the
        waiter out of line; leaving by an exception after a grant hands the grant on."""
        ticket: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (key, next(self._arrival), ticket))
        try:
            yield ticket
        except BaseException:
            if granted(ticket):
                self._hand_on()  # granted just as we were cancelled: pass it on
            raise
        finally:
            if not ticket.done() or ticket.cancelled():
                self._waiters = [w for w in self._waiters if w[2] is not ticket]
                heapq.heapify(self._waiters)

    def grant(self) -> bool:
        """Let the first waiter in; False when nobody waits (the owner keeps what it would have handed out)."""
        while self._waiters:
            _, _, ticket = heapq.heappop(self._waiters)
            if not ticket.done():  # a cancelled one whose task has not left the line yet
                ticket.set_result(True)
                return True
        return False

    def open(self) -> None:
        """Let every waiter through without a grant: there is nothing to wait for any more."""
        for _, _, ticket in self._waiters:
            if not ticket.done():
                ticket.set_result(False)
        self._waiters.clear()

    def rekey(self, change: Callable[[K], K]) -> None:
        """Give waiters new keys (a deadline moved earlier); arrival order among equal keys stays."""
        self._waiters = [(change(key), n, ticket) for key, n, ticket in self._waiters]
        heapq.heapify(self._waiters)
