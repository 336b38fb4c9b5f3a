"""The queue loop: receive into free capacity, one task per message, extend visibility, settle fates in batches.

SQS is the buffer: a message is received only when there is room to work on it. On stop, receiving ends, in-flight
work gets a grace period, and whatever is still unfinished is made visible again for the next replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from spotq import acknowledging
from spotq.acknowledging import Fate, Outcome
from spotq.errors import TransientError
from spotq.notices import Delivery, Notice
from spotq.observability import metrics
from spotq.settings import QueueSettings

log = logging.getLogger(__name__)

Handle = Callable[[Delivery], Awaitable[tuple[Notice, Outcome]]]


class QueueApi(Protocol):
    async def receive(self, max_messages: int, wait_seconds: int, visibility_seconds: int) -> list[Delivery]: ...

    async def delete(self, receipts: list[str]) -> list[str]: ...

    async def change_visibility(self, receipts: list[str], seconds: int) -> None: ...


@dataclass
class _InFlight:
    delivery: Delivery
    receipt: str  # the newest handle: only it reliably deletes
    task: asyncio.Task[None] | None = None


@dataclass
class DispatcherState:
    last_receive_ok: float | None = None
    in_flight: dict[str, _InFlight] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, queue: QueueApi, handle: Handle, settings: QueueSettings, *, stop_grace_seconds: float) -> None:
        self._queue = queue
        self._handle = handle
        self._settings = settings
        self._grace = stop_grace_seconds
        self.state = DispatcherState()
        self._room = asyncio.Condition()
        self._deletes: asyncio.Queue[str] = asyncio.Queue()
        self._reserved = 0  # room promised to receives under way, so concurrent receivers do not overshoot

    @property
    def _free(self) -> int:
        return self._settings.max_in_flight_messages - len(self.state.in_flight) - self._reserved

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            housekeeping = [
                group.create_task(self._extend_visibility()),
                group.create_task(self._delete_batches()),
            ]
            async with asyncio.TaskGroup() as workers:
                receivers = [group.create_task(self._receive(workers, stop)) for _ in range(self._settings.receivers)]
                await stop.wait()
                for receiver in receivers:
                    receiver.cancel()
                await self._finish_in_flight()
            await self._flush_deletes()
            for task in housekeeping:
                task.cancel()

    async def _receive(self, workers: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            async with self._room:
                await self._room.wait_for(lambda: self._free > 0)
                room = min(10, self._free)
                self._reserved += room
            try:
                batch = await self._queue.receive(
                    room, self._settings.wait_seconds, self._settings.visibility_timeout_seconds
                )
                self.state.last_receive_ok = loop.time()
                failures = 0
            except TransientError as exc:
                failures += 1
                log.warning("receive failed", extra={"error": str(exc)[:200], "failures": failures})
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            finally:
                self._reserved -= room
            for delivery in batch:
                self._start(workers, delivery)

    def _start(self, workers: asyncio.TaskGroup, delivery: Delivery) -> None:
        current = self.state.in_flight.get(delivery.message_id)
        if current is not None:
            # A redelivery of a message still being worked on: keep the newer handle, do not start twice.
            current.receipt = delivery.receipt_handle
            return
        entry = _InFlight(delivery, delivery.receipt_handle)
        self.state.in_flight[delivery.message_id] = entry
        metrics.MESSAGES_IN_FLIGHT.set(len(self.state.in_flight))
        entry.task = workers.create_task(self._work(entry))

    async def _work(self, entry: _InFlight) -> None:
        kind = "unknown"
        try:
            try:
                notice, outcome = await self._handle(entry.delivery)
                kind = notice.kind.value
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug, not a message problem: keep the process alive and the message for another try.
                log.exception("handler failed", extra={"message_id": entry.delivery.message_id})
                outcome = Outcome.TRANSIENT
            acknowledging.count(kind, outcome)
            await self._settle(entry, acknowledging.fate(outcome, self._settings.unknown_instance_fate))
        finally:
            self.state.in_flight.pop(entry.delivery.message_id, None)
            metrics.MESSAGES_IN_FLIGHT.set(len(self.state.in_flight))
            async with self._room:
                self._room.notify_all()

    async def _settle(self, entry: _InFlight, fate: Fate) -> None:
        if fate is Fate.DELETE:
            await self._deletes.put(entry.receipt)
        elif fate is Fate.RETRY:
            await self._queue.change_visibility([entry.receipt], self._settings.retry_delay_seconds)
        elif fate is Fate.RELEASE:
            await self._queue.change_visibility([entry.receipt], 0)
        # Fate.LEAVE: the message returns when its visibility lapses.

    async def _delete_batches(self) -> None:
        while True:
            receipts = [await self._deletes.get()]
            await asyncio.sleep(0.02)  # let a burst of finishing messages share calls
            while not self._deletes.empty():
                receipts.append(self._deletes.get_nowait())
            failed = await self._queue.delete(receipts)
            if failed:
                log.warning("messages not deleted; they will be redelivered", extra={"count": len(failed)})

    async def _flush_deletes(self) -> None:
        receipts: list[str] = []
        while not self._deletes.empty():
            receipts.append(self._deletes.get_nowait())
        if receipts:
            await self._queue.delete(receipts)

    async def _extend_visibility(self) -> None:
        """Every third of the visibility timeout, push every in-flight message's visibility out again."""
        period = self._settings.visibility_timeout_seconds / 3
        while True:
            await asyncio.sleep(period)
            receipts = [entry.receipt for entry in self.state.in_flight.values()]
            if receipts:
                await self._queue.change_visibility(receipts, self._settings.visibility_timeout_seconds)

    async def _finish_in_flight(self) -> None:
        """Give in-flight work the grace period, then cancel it and hand its messages back to the queue."""
        tasks = [entry.task for entry in self.state.in_flight.values() if entry.task is not None]
        if tasks:
            log.info("stopping: waiting for in-flight work", extra={"messages": len(tasks), "grace": self._grace})
            _, unfinished = await asyncio.wait(tasks, timeout=self._grace)
            receipts = [e.receipt for e in self.state.in_flight.values() if e.task in unfinished]
            for task in unfinished:
                task.cancel()
            if receipts:
                log.info("stopping: releasing unfinished messages", extra={"messages": len(receipts)})
                await self._queue.change_visibility(receipts, 0)
