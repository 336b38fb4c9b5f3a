"""The priority gate under slots, the rate limiter and the budgets: order, withdrawal, and grants never lost."""

from __future__ import annotations

import asyncio

import pytest

from spotq.gate import Gate


async def loop_turns(turns: int = 10) -> None:
    """Every task that can run gets to run; no wall-clock wait."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Served:
    """Waiters that record the order they are let in."""

    def __init__(self, gate: Gate[float]) -> None:
        self.gate = gate
        self.order: list[str] = []

    def line_up(self, name: str, key: float) -> asyncio.Task[None]:
        async def wait() -> None:
            await self.gate.wait(key)
            self.order.append(name)

        return asyncio.create_task(wait(), name=name)


async def test_waiters_are_served_lowest_key_first() -> None:
    gate: Gate[float] = Gate(hand_on=lambda: None)
    served = Served(gate)
    tasks = [served.line_up(name, key) for name, key in (("late", 30.0), ("soon", 10.0), ("middle", 20.0))]
    await loop_turns()
    assert gate.waiting == 3
    while gate.grant():
        await loop_turns()
    await asyncio.gather(*tasks)
    assert served.order == ["soon", "middle", "late"]
    assert gate.waiting == 0


async def test_equal_keys_are_served_in_arrival_order() -> None:
    gate: Gate[float] = Gate(hand_on=lambda: None)
    served = Served(gate)
    tasks = []
    for name in ("a", "b", "c", "d"):
        tasks.append(served.line_up(name, 1.0))
        await loop_turns()  # each is in line before the next arrives
    for _ in tasks:
        assert gate.grant()
        await loop_turns()
    assert served.order == ["a", "b", "c", "d"]


async def test_a_waiter_cancelled_while_waiting_leaves_the_line_and_the_next_is_served() -> None:
    handed_on: list[str] = []
    gate: Gate[float] = Gate(hand_on=lambda: handed_on.append("handed on"))
    served = Served(gate)
    first, second = served.line_up("first", 1.0), served.line_up("second", 2.0)
    await loop_turns()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert gate.waiting == 1
    assert gate.grant()
    await second
    assert served.order == ["second"]
    assert handed_on == []  # it had been granted nothing: nothing to pass on
    assert not gate.grant()  # nobody left: the owner keeps what it would have handed out


async def test_a_grant_that_meets_a_cancellation_is_handed_on() -> None:
    gate: Gate[float] = Gate(hand_on=lambda: gate.grant())  # like a slot: what one leaves goes to the next
    served = Served(gate)
    first, second = served.line_up("first", 1.0), served.line_up("second", 2.0)
    await loop_turns()
    assert gate.grant()  # the first is let in ...
    first.cancel()  # ... in the same instant its drain's deadline cancels it
    with pytest.raises(asyncio.CancelledError):
        await first
    await loop_turns()
    assert second.done(), "the grant was lost with the cancelled waiter"
    assert served.order == ["second"]


async def test_open_lets_everyone_through_without_a_grant() -> None:
    handed_on: list[str] = []
    gate: Gate[float] = Gate(hand_on=lambda: handed_on.append("handed on"))
    results = [asyncio.create_task(gate.wait(key)) for key in (1.0, 2.0)]
    await loop_turns()
    gate.open()
    assert await asyncio.gather(*results) == [False, False]
    assert gate.waiting == 0
    assert handed_on == []


async def test_rekeyed_waiters_take_their_new_place() -> None:
    gate: Gate[float] = Gate(hand_on=lambda: None)
    served = Served(gate)
    tasks = [served.line_up("soon", 10.0), served.line_up("moved", 30.0)]
    await loop_turns()
    gate.rekey(lambda key: 5.0 if key == 30.0 else key)
    for _ in tasks:
        assert gate.grant()
        await loop_turns()
    assert served.order == ["moved", "soon"]


async def test_a_waiter_that_stops_waiting_undecided_leaves_the_line() -> None:
    gate: Gate[float] = Gate(hand_on=lambda: None)
    with gate.queued(1.0) as ticket:
        assert gate.waiting == 1
        await asyncio.wait([ticket], timeout=0)
    assert not ticket.done()
    assert gate.waiting == 0
    assert not gate.grant()
