"""A bug while parsing is not a bad body: through the real Handler and Dispatcher, its message is kept and retried."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

import pytest

from spotq import notices, planning, selectors
from spotq.dispatching import Dispatcher
from spotq.handling import Handler
from spotq.kube.nodes import NodeIndex
from spotq.observability import metrics
from spotq.resolving import Resolver
from spotq.settings import QueueSettings, Settings
from tests.fakes import FakePods, FakeQueue
from tests.unit.test_acting import make_actor

SPOT_WARNING = (
    Path(__file__).parent.parent / "data" / "events" / "eventbridge" / "spot-interruption-warning.json"
).read_text()


def finished(kind: str, outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("spotq_messages_finished_total", {"kind": kind, "outcome": outcome}) or 0.0


async def dispatch_one(body: str, queue: FakeQueue) -> None:
    actor, _, _, _ = make_actor(FakePods())
    handler = Handler(
        resolver=Resolver(NodeIndex(selectors.parse("")), None),
        actor=actor,
        policy=planning.Policy.from_settings(Settings()),
        unknown_instance_fate="delete",
        dry_run=False,
    )
    queue.put("m1", body)
    dispatcher = Dispatcher(queue, handler.handle, QueueSettings(retry_delay_seconds=7), stop_grace_seconds=1)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    async with asyncio.timeout(3):
        while not (queue.deleted or queue.visibility):
            await asyncio.sleep(0.01)
    stop.set()
    await task


async def test_a_bug_while_parsing_retries_the_message_and_logs_the_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event_time: datetime, action: str) -> datetime:
        raise RuntimeError("bug in spotq")

    monkeypatch.setattr(notices, "spot_deadline", broken)
    before = finished("unknown", "transient")
    queue = FakeQueue()
    with caplog.at_level(logging.ERROR):
        await dispatch_one(SPOT_WARNING, queue)
    assert queue.deleted == [] and queue.visibility == [("m1", 7)]
    assert finished("unknown", "transient") == before + 1
    (record,) = [r for r in caplog.records if r.getMessage() == "handler failed"]
    assert record.exc_info is not None and "bug in spotq" in str(record.exc_info[1])


async def test_a_malformed_body_on_the_same_path_is_deleted() -> None:
    before = finished("malformed", "malformed")
    queue = FakeQueue()
    await dispatch_one(SPOT_WARNING.replace('"time"', '"tim"'), queue)
    assert queue.deleted == ["m1"] and queue.visibility == []
    assert finished("malformed", "malformed") == before + 1
