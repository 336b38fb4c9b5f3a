"""Selectors, deadline-ordered slots, the fate table."""

from __future__ import annotations

import asyncio

import pytest

from spotq import acknowledging, selectors
from spotq.acknowledging import Fate, Outcome
from spotq.errors import ConfigError
from spotq.slots import DeadlineSlots


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {}, True),
        ("lifecycle=Ec2Spot", {"lifecycle": "Ec2Spot"}, True),
        ("lifecycle=Ec2Spot", {"lifecycle": "OnDemand"}, False),
        ("lifecycle==Ec2Spot", {"lifecycle": "Ec2Spot"}, True),
        ("lifecycle!=OnDemand", {}, True),
        ("eks.amazonaws.com/capacityType", {"eks.amazonaws.com/capacityType": "SPOT"}, True),
        ("!spotq.io/skip", {"spotq.io/skip": ""}, False),
        ("a=1, b=2", {"a": "1", "b": "2"}, True),
        ("a=1,b=2", {"a": "1"}, False),
    ],
)
def test_selector_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert selectors.parse(text).matches(labels) is expected


def test_bad_selector_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="SPOTQ_KUBE__NODE_SELECTOR"):
        selectors.parse("a in (b)")


async def test_slots_serve_earliest_deadline_first() -> None:
    slots = DeadlineSlots(1)
    order: list[float] = []
    gate = asyncio.Event()

    async def worker(deadline: float) -> None:
        async with slots.hold(deadline):
            order.append(deadline)
            await gate.wait()

    async with asyncio.TaskGroup() as group:
        group.create_task(worker(0))
        await asyncio.sleep(0)
        for deadline in (30.0, 10.0, 20.0):
            group.create_task(worker(deadline))
        async with asyncio.timeout(1):
            while slots.waiting < 3:
                await asyncio.sleep(0)
        assert slots.waiting == 3
        gate.set()
    assert order == [0, 10.0, 20.0, 30.0]


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    slots = DeadlineSlots(1)
    async with slots.hold(0):
        waiter = asyncio.create_task(slots.hold(1).__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(1), slots.hold(2):
        pass


async def test_a_slot_given_up_early_goes_to_the_next_waiter_once() -> None:
    slots = DeadlineSlots(1)
    async with slots.hold(0) as release:
        first = asyncio.create_task(slots.hold(1).__aenter__())
        second = asyncio.create_task(slots.hold(2).__aenter__())
        await asyncio.sleep(0)
        release()
        release()  # a second call gives nothing more
        await asyncio.sleep(0)
        assert first.done() and not second.done()
    await asyncio.sleep(0)
    assert not second.done()  # leaving after the early release did not free another slot
    second.cancel()


@pytest.mark.parametrize(
    ("outcome", "unknown", "fate"),
    [
        (Outcome.DONE, "delete", Fate.DELETE),
        (Outcome.MALFORMED, "delete", Fate.DELETE),
        (Outcome.IGNORED, "release", Fate.DELETE),
        (Outcome.TEST_NOTIFICATION, "delete", Fate.DELETE),
        (Outcome.UNKNOWN_INSTANCE, "delete", Fate.DELETE),
        (Outcome.UNKNOWN_INSTANCE, "release", Fate.RELEASE),
        (Outcome.OUT_OF_SCOPE, "release", Fate.RELEASE),
        (Outcome.TRANSIENT, "delete", Fate.RETRY),
        (Outcome.DRY_RUN, "delete", Fate.LEAVE),
        (Outcome.FAILED, "delete", Fate.DELETE),
    ],
)
def test_fate_table(outcome: Outcome, unknown: str, fate: Fate) -> None:
    assert acknowledging.fate(outcome, unknown) is fate  # type: ignore[arg-type]


def test_one_transient_instance_keeps_the_whole_message() -> None:
    assert acknowledging.combine([Outcome.DONE, Outcome.TRANSIENT, Outcome.DONE]) is Outcome.TRANSIENT
    assert acknowledging.combine([Outcome.DONE, Outcome.UNKNOWN_INSTANCE]) is Outcome.UNKNOWN_INSTANCE
