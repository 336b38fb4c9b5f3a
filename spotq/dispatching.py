"""The queue loop: receive into free capacity, one task per message, then hand the outcome to `acknowledging`.

SQS is the buffer: a message is received only when there is room to work on it. On stop, receiving ends (a poll in
progress is let finish and whatever it returns handed straight back), in-flight work gets a grace period, and what is
still unfinished is made visible again for the next replica; then the acknowledger closes in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from spotq import backoff
from spotq.acknowledging import Acknowledger, Outcome, ReceiptApi
from spotq.errors import TransientError
from spotq.notices import Delivery, Notice
from spotq.observability import metrics
from spotq.settings import QueueSettings

log = logging.getLogger(__name__)

Handle = Callable[[Delivery], Awaitable[tuple[Notice, Outcome]]]

# SQS returns at most ten messages per receive.
_BATCH = 10
# A long poll answers within wait_seconds; this much more covers the network. Past it, a receive is in trouble.
RECEIVE_MARGIN_SECONDS = 5.0
# A receive sent after a failure that has not failed within this long got through (a refused connection, a denied
# request, a missing queue fail at once): SQS answers again, though its long poll has not returned yet.
RECEIVE_ACCEPTED_SECONDS = 1.0
# A failed receive is tried again after 1 s, doubling up to 5 s while SQS keeps failing (each wait drawn between
# half and all of it, so the receivers do not retry in step). The receivers are what finds SQS back: a longer cap
# left spotq deaf for up to its length after an outage ended (a receive costs nothing while it fails: at most about
# one a second for four receivers).
_RECEIVE_BACKOFF = backoff.Backoff(initial_seconds=1.0, max_seconds=5.0, jitter=0.5)
# In a long outage a receiver logs its 1st, 2nd, 4th, 8th… failure in a row, then every 60th (about every 4 min).
_LOG_EVERY_FAILURES = 60


class QueueApi(ReceiptApi, Protocol):
    async def receive(self, max_messages: int, wait_seconds: int, visibility_seconds: int) -> list[Delivery]: ...

    async def reachable(self) -> bool: ...


@dataclass
class DispatcherState:
    last_receive_ok: float | None = None  # loop time
    last_receive_failed: float | None = None
    receives_under_way: dict[int, float] = field(default_factory=dict)  # receive → loop time it was sent
    receive_failures: int = 0
    in_flight: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # message id → its work


class Dispatcher:
    def __init__(
        self,
        queue: QueueApi,
        handle: Handle,
        settings: QueueSettings,
        *,
        stop_grace_seconds: float,
        acknowledger: Acknowledger | None = None,
    ) -> None:
        """`acknowledger`: where outcomes go; unset, one over `queue` with `settings`. `run` runs and closes it."""
        self._queue = queue
        self._handle = handle
        self._settings = settings
        self._grace = stop_grace_seconds
        self.acknowledger = acknowledger or Acknowledger(queue, settings)
        self.state = DispatcherState()
        self._room = asyncio.Condition()
        self._receive_ids = itertools.count()
        self._reserved = 0  # room promised to receives under way, so concurrent receivers do not overshoot

    @property
    def _free(self) -> int:
        return self._settings.max_in_flight_messages - len(self.state.in_flight) - self._reserved

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.acknowledger.run())
            try:
                async with asyncio.TaskGroup() as workers:
                    receivers = [
                        group.create_task(self._receive(workers, stop)) for _ in range(self._settings.receivers)
                    ]
                    await stop.wait()
                    log.info("stopping: receiving ends", extra={"in_flight": len(self.state.in_flight)})
                    async with self._room:
                        self._room.notify_all()  # receivers waiting for room see the stop
                    await asyncio.gather(self._stop_receivers(receivers), self._finish_in_flight())
            finally:
                await self.acknowledger.aclose()

    async def ready(self, probe_timeout_seconds: float = 2.0) -> tuple[bool, str]:
        """Can spotq receive? Answers within `probe_timeout_seconds`: a failing receive is unready at once, a
        recent good one ready; otherwise one GetQueueAttributes decides, cut short rather than wait out SDK retries.
        """
        ok, failed = self.state.last_receive_ok, self.state.last_receive_failed
        loop = asyncio.get_running_loop()
        if failed is not None and (ok is None or failed > ok):
            # After an outage the first good receive returns only when its long poll ends (20 s): a receive sent
            # since the failure and still under way after a second, with the probe answering, is ready again
            # (the earliest such one: a receiver sending later, out of its back-off, does not hide it).
            since = [at for at in self.state.receives_under_way.values() if at > failed]
            if not since or loop.time() - min(since) < RECEIVE_ACCEPTED_SECONDS:
                return False, "queue receive failing"
        elif ok is not None and loop.time() - ok < self._settings.wait_seconds + RECEIVE_MARGIN_SECONDS:
            return True, "ok"
        try:
            async with asyncio.timeout(probe_timeout_seconds):
                reachable = await self._queue.reachable()
        except TimeoutError:
            reachable = False
        return (True, "ok") if reachable else (False, "queue not reachable")

    async def _receive(self, workers: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            async with self._room:
                await self._room.wait_for(lambda: self._free > 0 or stop.is_set())
                if stop.is_set():
                    return
                room = min(_BATCH, self._free)
                self._reserved += room
            receive = next(self._receive_ids)
            try:
                self.state.receives_under_way[receive] = loop.time()
                batch = await self._queue.receive(
                    room, self._settings.wait_seconds, self._settings.visibility_timeout_seconds
                )
            except TransientError as exc:
                failures += 1
                self.state.receive_failures += 1
                self.state.last_receive_failed = loop.time()
                if _worth_logging(failures):
                    log.warning("receive failed", extra={"error": str(exc)[:200], "failures": failures})
                await _pause(stop, _RECEIVE_BACKOFF.seconds(failures))
                continue
            else:
                self.state.last_receive_ok = loop.time()
                failures = 0
            finally:
                self._reserved -= room
                del self.state.receives_under_way[receive]
            if stop.is_set():
                await self._hand_back(batch)
                return
            for delivery in batch:
                self._start(workers, delivery)

    async def _hand_back(self, batch: Sequence[Delivery]) -> None:
        """Messages a poll returned after the stop: visible again at once, not an interruption late by a timeout."""
        new = [d.message_id for d in batch if self.acknowledger.track(d)]
        if new:
            log.info("stopping: handing back messages received while stopping", extra={"messages": len(new)})
            await self.acknowledger.release(new, reason="received")

    def _start(self, workers: asyncio.TaskGroup, delivery: Delivery) -> None:
        if not self.acknowledger.track(delivery):
            return  # a redelivery of a message still held: its newer receipt is kept, the work not started twice
        self.state.in_flight[delivery.message_id] = workers.create_task(self._work(delivery))
        metrics.MESSAGES_IN_FLIGHT.set(len(self.state.in_flight))

    async def _work(self, delivery: Delivery) -> None:
        kind = "unknown"
        try:
            try:
                notice, outcome = await self._handle(delivery)
                kind = notice.kind.value
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug, not a message problem: keep the process alive and the message for another try.
                log.exception("handler failed", extra={"message_id": delivery.message_id})
                outcome = Outcome.TRANSIENT
            await self.acknowledger.settle(delivery.message_id, outcome, kind=kind)
        finally:
            self.state.in_flight.pop(delivery.message_id, None)
            metrics.MESSAGES_IN_FLIGHT.set(len(self.state.in_flight))
            async with self._room:
                self._room.notify_all()

    async def _stop_receivers(self, receivers: list[asyncio.Task[None]]) -> None:
        """Let each poll in progress answer (SQS has already handed out what it returns); a hung one is cut off."""
        _, hung = await asyncio.wait(receivers, timeout=self._settings.wait_seconds + RECEIVE_MARGIN_SECONDS)
        if hung:
            log.warning("stopping: a receive did not answer; its messages return after their visibility timeout")
            for task in hung:
                task.cancel()
            await asyncio.wait(hung)

    async def _finish_in_flight(self) -> None:
        """Give in-flight work the grace period, then cancel it and hand its messages back to the queue."""
        tasks = dict(self.state.in_flight)
        if not tasks:
            return
        log.info("stopping: waiting for in-flight work", extra={"messages": len(tasks), "grace": self._grace})
        _, unfinished = await asyncio.wait(tasks.values(), timeout=self._grace)
        for task in unfinished:
            task.cancel()
        if unfinished:
            log.info("stopping: releasing unfinished messages", extra={"messages": len(unfinished)})
            await self.acknowledger.release([m for m, t in tasks.items() if t in unfinished], reason="unfinished")


def _worth_logging(failures: int) -> bool:
    return failures & (failures - 1) == 0 or failures % _LOG_EVERY_FAILURES == 0


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but no longer than until the stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
