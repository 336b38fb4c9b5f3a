"""Message fates as the dispatcher applies them, receiving only into free capacity, and a clean stop."""

from __future__ import annotations

import asyncio

import pytest

from spotq import dispatching, notices
from spotq.acknowledging import Outcome
from spotq.dispatching import Dispatcher
from spotq.errors import TransientError
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

    working = 0

    async def slow(delivery: Delivery) -> tuple[Notice, Outcome]:
        nonlocal working
        working += 1
        await release.wait()
        return notices.Ignored(), Outcome.DONE

    dispatcher = Dispatcher(queue, slow, QueueSettings(max_in_flight_messages=4, receivers=3), stop_grace_seconds=1)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    async with asyncio.timeout(3):
        while working < 4:
            await asyncio.sleep(0.01)
    for _ in range(20):  # loop turns for the two idle receivers to overreach, if they would (no wall-clock wait)
        await asyncio.sleep(0)
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
    async with asyncio.timeout(3):
        while not queue.deleted:
            await asyncio.sleep(0.01)
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
        while ("long", 0.3) not in queue.visibility:  # works on past its visibility timeout until it is extended
            await asyncio.sleep(0.01)
        return notices.Ignored(), Outcome.DONE

    settings = QueueSettings.model_construct(**{**QueueSettings().model_dump(), "visibility_timeout_seconds": 0.3})
    dispatcher = Dispatcher(queue, long, settings, stop_grace_seconds=1)
    await run_until(dispatcher, lambda: queue.deleted)
    assert ("long", 0.3) in queue.visibility


async def test_a_message_that_finishes_during_stop_is_still_deleted() -> None:
    queue = FakeQueue()
    queue.put("late", "x")
    stop = asyncio.Event()

    async def finishes_once_stopping(delivery: Delivery) -> tuple[Notice, Outcome]:
        await stop.wait()
        return notices.Ignored(), Outcome.DONE

    dispatcher = Dispatcher(queue, finishes_once_stopping, QueueSettings(), stop_grace_seconds=1)
    task = asyncio.create_task(dispatcher.run(stop))
    await queue.receiving.wait()
    stop.set()
    async with asyncio.timeout(3):
        await task
    assert queue.deleted == ["late"]


async def test_stop_waits_for_the_delete_batch_in_progress() -> None:
    queue = FakeQueue(delete_latency_seconds=0.05)  # SQS takes a moment to answer DeleteMessageBatch
    queue.put("done", "done")
    dispatcher = Dispatcher(queue, by_body, QueueSettings(), stop_grace_seconds=1)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await queue.delete_started.wait()
    stop.set()
    async with asyncio.timeout(3):
        await task
    assert queue.deleted == ["done"]


async def test_messages_a_receive_returns_after_stop_are_handed_back_at_once() -> None:
    queue = FakeQueue(hold_answers=True)  # SQS has handed the messages out; its answer is on the way
    queue.put("a", "done")
    queue.put("b", "done")
    handled: list[str] = []

    async def record(delivery: Delivery) -> tuple[Notice, Outcome]:
        handled.append(delivery.message_id)
        return notices.Ignored(), Outcome.DONE

    dispatcher = Dispatcher(queue, record, QueueSettings(receivers=1), stop_grace_seconds=1)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await queue.receiving.wait()
    stop.set()
    queue.answer.set()
    async with asyncio.timeout(3):
        await task
    assert sorted(queue.visibility) == [("a", 0), ("b", 0)]
    assert handled == []
    assert queue.deleted == []


async def test_stop_is_prompt_when_the_queue_is_busy() -> None:
    queue = FakeQueue()
    for i in range(100):
        queue.put(f"m{i}", "x")

    async def never_finishes(delivery: Delivery) -> tuple[Notice, Outcome]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    settings = QueueSettings(max_in_flight_messages=4, receivers=3)
    dispatcher = Dispatcher(queue, never_finishes, settings, stop_grace_seconds=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    async with asyncio.timeout(3):
        while len(dispatcher.state.in_flight) < 4:
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(1):
        await task
    assert len(queue.bodies) == 96  # nothing more received once stopping
    assert sorted(m for m, seconds in queue.visibility if seconds == 0) == ["m0", "m1", "m2", "m3"]


async def test_an_unconfirmed_delete_is_retried_while_its_message_is_kept_invisible() -> None:
    queue = FakeQueue(fail_deletes=2)  # SQS unreachable for the first two DeleteMessageBatch calls
    queue.put("m", "done")
    settings = QueueSettings.model_construct(**{**QueueSettings().model_dump(), "visibility_timeout_seconds": 0.3})
    dispatcher = Dispatcher(queue, by_body, settings, stop_grace_seconds=1)
    await run_until(dispatcher, lambda: queue.deleted)
    assert queue.deleted == ["m"]
    assert queue.delete_calls == 3
    assert ("m", 0.3) in queue.visibility  # its work had finished; the pending delete was kept invisible


async def test_a_redelivery_while_the_delete_is_pending_is_not_worked_again_and_its_newest_receipt_deletes() -> None:
    queue = FakeQueue(fail_deletes=1)
    queue.put("m", "x")
    handled: list[str] = []

    async def record(delivery: Delivery) -> tuple[Notice, Outcome]:
        handled.append(delivery.receipt_handle)
        queue.put("m", "x")  # its visibility lapses meanwhile: SQS hands it out again
        return notices.Ignored(), Outcome.DONE

    dispatcher = Dispatcher(queue, record, QueueSettings(receivers=1), stop_grace_seconds=1)
    await run_until(dispatcher, lambda: queue.deleted)
    assert handled == ["r1-m"]
    assert queue.deleted_receipts == ["r2-m"]


async def test_failing_receives_make_the_queue_unready_at_once() -> None:
    queue = FakeQueue(fail_receives=True)
    dispatcher = Dispatcher(queue, by_body, QueueSettings(), stop_grace_seconds=1)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    async with asyncio.timeout(3):
        while dispatcher.state.receive_failures == 0:
            await asyncio.sleep(0.01)
    assert await dispatcher.ready() == (False, "queue receive failing")
    stop.set()
    await task


@pytest.mark.parametrize(
    ("failed_ago", "started_ago", "reachable_hangs", "expected"),
    [
        (30.0, [2.0], False, (True, "ok")),  # a receive under way since the outage ended, the probe answers
        (30.0, [2.0], True, (False, "queue not reachable")),  # under way, but the endpoint hangs
        (30.0, [0.5], False, (False, "queue receive failing")),  # just sent: a refusal would not have come yet
        (1.0, [2.0], False, (False, "queue receive failing")),  # sent before the last failure
        (30.0, [], False, (False, "queue receive failing")),  # every receiver waiting out its back-off
        # Another receiver, out of its back-off, sends half a second ago: the first still says SQS answers (a
        # single "last receive sent" made the process unready for a second at each such send after an outage).
        (30.0, [2.0, 0.5], False, (True, "ok")),
    ],
)
async def test_after_an_outage_a_receive_under_way_and_a_probe_that_answers_are_ready_before_the_poll_returns(
    failed_ago: float, started_ago: list[float], reachable_hangs: bool, expected: tuple[bool, str]
) -> None:
    queue = FakeQueue(reachable_hangs=reachable_hangs)
    dispatcher = Dispatcher(queue, by_body, QueueSettings(), stop_grace_seconds=1)
    now = asyncio.get_running_loop().time()
    dispatcher.state.last_receive_ok = now - 60.0
    dispatcher.state.last_receive_failed = now - failed_ago
    dispatcher.state.receives_under_way = {i: now - ago for i, ago in enumerate(started_ago)}
    assert await dispatcher.ready(probe_timeout_seconds=0.05) == expected


async def test_a_queue_that_hangs_is_unready_within_the_probe_timeout() -> None:
    queue = FakeQueue(reachable_hangs=True)
    dispatcher = Dispatcher(queue, by_body, QueueSettings(), stop_grace_seconds=1)
    async with asyncio.timeout(1):
        assert await dispatcher.ready(probe_timeout_seconds=0.05) == (False, "queue not reachable")
    queue.reachable_hangs = False
    assert await dispatcher.ready() == (True, "ok")


async def test_a_long_queue_outage_does_not_stop_the_receiver(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class DownQueue(FakeQueue):
        async def receive(self, max_messages: int, wait_seconds: int, visibility_seconds: int) -> list[Delivery]:
            await asyncio.sleep(0)
            raise TransientError("receive_message: connection refused")

    pauses: list[float] = []

    async def pause(stop: asyncio.Event, seconds: float) -> None:
        pauses.append(seconds)  # recorded, not slept: 1100 failures at 30 s apiece are nine hours
        await asyncio.sleep(0)

    monkeypatch.setattr(dispatching, "_pause", pause)
    dispatcher = Dispatcher(DownQueue(), by_body, QueueSettings(receivers=1), stop_grace_seconds=1)
    await run_until(dispatcher, lambda: dispatcher.state.receive_failures >= 1100, timeout=10)
    assert all(full / 2 <= pause <= full for pause, full in zip(pauses[:3], [1.0, 2.0, 4.0], strict=True))
    # Capped at 5 s: the receivers find SQS back within that of an outage's end (30 s before).
    assert min(pauses[10:]) >= 2.5 and max(pauses) <= 5.0
    logged = [r for r in caplog.records if r.getMessage() == "receive failed"]
    # The 1st, 2nd, 4th … failure, and every 60th: about 30 lines for 1100+ failures, not one each.
    failures = dispatcher.state.receive_failures
    assert 11 <= len(logged) <= 11 + failures // 60 + 1
    assert [r.__dict__["failures"] for r in logged[:4]] == [1, 2, 4, 8]
