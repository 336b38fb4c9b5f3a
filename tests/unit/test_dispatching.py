"""Message fates as the dispatcher applies them, receiving only into free capacity, and a clean stop."""

from __future__ import annotations

import asyncio

from spotq import notices
from spotq.acknowledging import Outcome
from spotq.dispatching import Dispatcher
from spotq.notices import Delivery, Notice
from spotq.settings import QueueSettings
from tests.fakes import FakeQueue

OUTCOMES = {
    "done": Outcome.DONE,
    "malformed": Outcome.MALFORMED,
    "transient": Outcome.TRANSIENT,
    "unknown": Outcome.UNKNOWN_INSTANCE,
    "dry": Outcome.DRY_RUN,
}


async def by_body(delivery: Delivery) -> tuple[Notice, Outcome]:
    return notices.Ignored(), OUTCOMES[delivery.body]


async def run_until(dispatcher: Dispatcher, condition: object, timeout: float = 3.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)
    stop.set()
    await task


async def test_each_outcome_gets_its_fate() -> None:
    queue = FakeQueue()
    for body in OUTCOMES:
        queue.put(body, body)
    settings = QueueSettings(retry_delay_seconds=7, unknown_instance_fate="release")
    dispatcher = Dispatcher(queue, by_body, settings, stop_grace_seconds=1)
    await run_until(dispatcher, lambda: len(queue.deleted) == 2 and len(queue.visibility) == 2)
    assert sorted(queue.deleted) == ["done", "malformed"]
    assert sorted(queue.visibility) == [("transient", 7), ("unknown", 0)]


async def test_receives_only_what_fits() -> None:
    queue = FakeQueue()
    for i in range(30):
        queue.put(f"m{i}", "done")
    release = asyncio.Event()

    async def slow(delivery: Delivery) -> tuple[Notice, Outcome]:
        await release.wait()
        return notices.Ignored(), Outcome.DONE

    dispatcher = Dispatcher(queue, slow, QueueSettings(max_in_flight_messages=4, receivers=3), stop_grace_seconds=1)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(0.2)
    assert len(dispatcher.state.in_flight) == 4
    assert len(queue.bodies) == 26
    release.set()
    async with asyncio.timeout(3):
        while len(queue.deleted) < 30:
            await asyncio.sleep(0.01)
    stop.set()
    await task
    assert max(queue.receive_sizes) <= 4


async def test_stop_releases_unfinished_messages_after_grace() -> None:
    queue = FakeQueue()
    queue.put("stuck", "x")
    queue.put("quick", "y")
    started = asyncio.Event()

    async def handler(delivery: Delivery) -> tuple[Notice, Outcome]:
        if delivery.body == "x":
            started.set()
            await asyncio.sleep(60)
        return notices.Ignored(), Outcome.DONE

    dispatcher = Dispatcher(queue, handler, QueueSettings(), stop_grace_seconds=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await started.wait()
    await asyncio.sleep(0.05)
    stop.set()
    async with asyncio.timeout(3):
        await task
    assert queue.deleted == ["quick"]
    assert queue.visibility == [("stuck", 0)]


async def test_a_handler_bug_keeps_the_process_and_the_message() -> None:
    queue = FakeQueue()
    queue.put("boom", "x")

    async def broken(delivery: Delivery) -> tuple[Notice, Outcome]:
        raise RuntimeError("bug")

    dispatcher = Dispatcher(queue, broken, QueueSettings(retry_delay_seconds=3), stop_grace_seconds=1)
    await run_until(dispatcher, lambda: queue.visibility)
    assert queue.visibility == [("boom", 3)]
    assert queue.deleted == []


async def test_visibility_is_extended_while_work_runs() -> None:
    queue = FakeQueue()
    queue.put("long", "x")

    async def long(delivery: Delivery) -> tuple[Notice, Outcome]:
        await asyncio.sleep(0.5)
        return notices.Ignored(), Outcome.DONE

    settings = QueueSettings.model_construct(**{**QueueSettings().model_dump(), "visibility_timeout_seconds": 0.3})
    dispatcher = Dispatcher(queue, long, settings, stop_grace_seconds=1)
    await run_until(dispatcher, lambda: queue.deleted)
    assert ("long", 0.3) in queue.visibility
