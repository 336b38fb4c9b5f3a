"""Side tasks next to a plan's main work: a TaskGroup whose one error comes out as itself, and the first of several
waits to return."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


async def first_of(*waits: Coroutine[Any, Any, object], until: float | None) -> None:
    """Wait until the first of `waits` returns, or loop time `until` (None: no limit); the others are cancelled."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(wait) for wait in waits]
        try:
            async with asyncio.timeout_at(until):
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        for task in tasks:
            task.cancel()


@contextlib.asynccontextmanager
async def beside() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup for side tasks (Events, heartbeats) next to the main work, whose own exception comes out as
    itself rather than wrapped in an ExceptionGroup, so the handler still tells transient from permanent."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as error:
        if len(error.exceptions) == 1:
            raise error.exceptions[0] from None
        raise
