"""IMDS mode's Watcher: a bug in spotq's own code is handled as queue mode handles it (logged with its traceback, the
notice kept and tried again, the pod stays up); a maintenance event that ends is a new notice (its marks come off)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from spotq import plans
from spotq.notices import Notice
from spotq.observability import logs
from spotq.ports import NodeRef
from tests.unit.test_imds_mode import INSTANCE_ACTION_PATH, FakeMetadata, make_watcher, spot_body


@dataclass
class BuggyActor:
    """Raises an error no handler expects on its first call(s), then works."""

    failures: int = 1
    calls: list[str] = field(default_factory=list)

    async def act(
        self, plan: plans.Plan, notice: Notice, node: NodeRef | None, received: float, log: logs.Context
    ) -> None:
        self.calls.append(notice.kind.value)
        if self.failures:
            self.failures -= 1
            raise KeyError("a bug in spotq")


async def test_an_unexpected_error_is_logged_kept_and_retried_without_stopping_the_pod(
    caplog: pytest.LogCaptureFixture,
) -> None:
    imds = FakeMetadata({INSTANCE_ACTION_PATH: spot_body()})
    actor = BuggyActor()
    watcher, _ = make_watcher(imds, actor)
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(watcher.run(stop))
        async with asyncio.timeout(3):
            while watcher.handled() != {"spot_interruption": "done"}:
                await asyncio.sleep(0.01)
        stop.set()
        await task  # run() did not die with the bug
    assert actor.calls == ["spot_interruption", "spot_interruption"]
    failed = [r for r in caplog.records if r.getMessage() == "notice handling failed; trying again at the next poll"]
    assert failed and failed[0].exc_info is not None  # with its traceback


async def test_a_maintenance_event_that_is_canceled_after_acting_is_acted_on_again_with_a_release() -> None:
    import json

    from tests.unit.test_imds_mode import SCHEDULED_MAINTENANCE_PATH, RecordingActor, poll_and_settle, sample

    events = json.loads(sample("maintenance-scheduled.json"))
    imds = FakeMetadata({SCHEDULED_MAINTENANCE_PATH: json.dumps(events)})
    actor = RecordingActor()
    watcher, _ = make_watcher(imds, actor, scheduled_maintenance=True)
    await poll_and_settle(watcher, rounds=2)
    for event in events:
        event["State"] = "canceled"
    imds.documents[SCHEDULED_MAINTENANCE_PATH] = json.dumps(events)
    await poll_and_settle(watcher, rounds=2)
    assert [plan.step_names[-1] for plan, _, _ in actor.acted] == ["drain", "release"]
