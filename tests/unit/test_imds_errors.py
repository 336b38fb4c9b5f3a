"""IMDS mode's policy for a bug in spotq's own code is queue mode's: log it with its traceback, keep the notice and
try again (queue mode keeps the message), never let it bring the pod down."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from spotq import plans
from spotq.kube.nodes import NodeRef
from spotq.notices import Notice
from spotq.observability import logs
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
