"""Queue mode (`spotq run`): the SQS source. EventBridge rules put notices on a queue; dispatching receives them
into free capacity and hands each to the one handler; acknowledging gives every message its fate.

Wiring only, run by the shared root (spotq.app). The AWS SDK loads here and only here (IMDS pods never import it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

from spotq import app
from spotq.acknowledging import Acknowledger
from spotq.audit import periodic
from spotq.audit.stack_reading import read_stack
from spotq.aws import session
from spotq.aws.autoscaling import Lifecycle
from spotq.aws.ec2 import InstanceLookup
from spotq.aws.sqs import Queue
from spotq.dispatching import Dispatcher
from spotq.kube import warming
from spotq.ports import LifecycleApi
from spotq.resolving import Resolver
from spotq.settings import Settings


class QueueSource:
    """app.Source over SQS: every node indexed, PDBs watched, instances looked up in EC2 on an index miss."""

    mode = "queue"
    index_scope = ""
    watch_budgets = True

    def __init__(self, settings: Settings) -> None:
        assert settings.queue.url is not None
        self._settings = settings
        self._url = settings.queue.url
        self._queue: Queue | None = None
        self._lookup: InstanceLookup | None = None
        self._dispatcher: Dispatcher | None = None
        self._core: app.Core | None = None

    async def open(self, stack: AsyncExitStack) -> LifecycleApi:
        aws = self._settings.aws
        self._queue = Queue(await session.open_client(stack, "sqs", aws), self._url)
        await self._queue.check_exists()
        # EC2 only for instances the index does not know, Auto Scaling only for hooks: opened on first use.
        self._lookup = InstanceLookup(session.LazyClient(stack, "ec2", aws))
        return Lifecycle(session.LazyClient(stack, "autoscaling", aws))

    def wire(self, core: app.Core) -> None:
        assert self._queue is not None and self._lookup is not None
        self._core = core
        queue_settings = self._settings.queue
        handler = core.handler(Resolver(core.index, self._lookup, self._settings.kube.instance_tag))
        self._dispatcher = Dispatcher(
            self._queue,
            handler.handle,
            queue_settings,
            stop_grace_seconds=queue_settings.stop_grace_seconds,
            acknowledger=Acknowledger(self._queue, queue_settings),
        )

    async def ready(self) -> tuple[bool, str]:
        assert self._dispatcher is not None
        return await self._dispatcher.ready()

    def details(self) -> dict[str, object]:
        return {"queue": self._url}

    def background(self) -> list[Coroutine[Any, Any, None]]:
        assert self._lookup is not None and self._core is not None
        kube = self._settings.kube
        work = [self._lookup.run(), warming.keep_warm(self._core.kube, min(kube.warm_connections, kube.max_in_flight))]
        if self._settings.audit.interval_seconds > 0:
            actor = self._core.actor
            work.append(
                periodic.run_periodically(self._core.kube, self._settings, busy=actor.draining, read_stack=read_stack)
            )
        return work

    async def run(self, stop: asyncio.Event) -> None:
        assert self._dispatcher is not None
        await self._dispatcher.run(stop)


async def run_queue_mode(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the process exit code."""
    return await app.run(settings, QueueSource(settings), stop=stop)
