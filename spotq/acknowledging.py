"""Message fates: every received message is held here until SQS has applied the fate its outcome decides.

Sits after the work (`dispatching` receives and runs it, then calls `Acknowledger.settle`).

outcome            fate
done               delete   planned steps finished, or the deadline passed
no_action          delete   the policy asks nothing for this notice
ignored            delete   a kind spotq does not handle
test_notification  delete   Auto Scaling's test message
malformed          delete   can never be parsed; body excerpt logged
failed             delete   a permanent error (e.g. the lifecycle action is gone)
unknown_instance   delete or release (SPOTQ_QUEUE__UNKNOWN_INSTANCE_FATE)
out_of_scope       delete or release (SPOTQ_QUEUE__UNKNOWN_INSTANCE_FATE)
transient          retry    visibility set to SPOTQ_QUEUE__RETRY_DELAY_SECONDS; a DLQ ends endless retries
dry_run            leave    nothing done, nothing deleted: the message comes back when visibility lapses
(stop)             release  unfinished work, or received while stopping: visibility 0, for the next replica

delete   batched, with the newest receipt handle. A delete SQS does not confirm stays pending: the message is kept
         invisible and the delete tried again with back-off until it succeeds or SQS calls the receipt invalid.
retry, release, leave  the message is let go (one ChangeMessageVisibility, or none for leave).
While a message is held (worked on, or its delete pending) its visibility is extended every third of the
visibility timeout. `aclose` is ordered: the delete batch in progress finishes and every pending delete gets a
last try before the process lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from spotq import backoff
from spotq.notices import Delivery
from spotq.observability import metrics
from spotq.settings import QueueSettings

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    DONE = "done"
    NO_ACTION = "no_action"
    IGNORED = "ignored"
    TEST_NOTIFICATION = "test_notification"
    MALFORMED = "malformed"
    FAILED = "failed"
    UNKNOWN_INSTANCE = "unknown_instance"
    OUT_OF_SCOPE = "out_of_scope"
    TRANSIENT = "transient"
    DRY_RUN = "dry_run"


class Fate(enum.StrEnum):
    DELETE = "delete"
    RETRY = "retry"
    RELEASE = "release"
    LEAVE = "leave"


# When one message names several instances, the most cautious outcome decides its fate.
_SEVERITY = [
    Outcome.DONE,
    Outcome.NO_ACTION,
    Outcome.IGNORED,
    Outcome.TEST_NOTIFICATION,
    Outcome.MALFORMED,
    Outcome.FAILED,
    Outcome.UNKNOWN_INSTANCE,
    Outcome.OUT_OF_SCOPE,
    Outcome.DRY_RUN,
    Outcome.TRANSIENT,
]


def combine(outcomes: list[Outcome]) -> Outcome:
    return max(outcomes, key=_SEVERITY.index) if outcomes else Outcome.NO_ACTION


def fate(outcome: Outcome, unknown_instance_fate: Literal["delete", "release"]) -> Fate:
    if outcome is Outcome.TRANSIENT:
        return Fate.RETRY
    if outcome is Outcome.DRY_RUN:
        return Fate.LEAVE
    if outcome in (Outcome.UNKNOWN_INSTANCE, Outcome.OUT_OF_SCOPE) and unknown_instance_fate == "release":
        return Fate.RELEASE
    return Fate.DELETE


def count(kind: str, outcome: Outcome) -> None:
    metrics.MESSAGES_FINISHED.labels(kind=kind, outcome=outcome.value).inc()


class ReceiptApi(Protocol):
    """What applying fates needs from the queue; both return the receipts to try again."""

    async def delete(self, receipts: Sequence[str]) -> list[str]: ...

    async def change_visibility(self, receipts: Sequence[str], seconds: int) -> list[str]: ...


# A burst of messages finishing together shares delete calls.
_BURST_SECONDS = 0.02


@dataclass
class _Held:
    receipt: str  # the newest handle: only it reliably deletes
    failed_deletes: int = 0
    due: float = 0.0  # loop time of the next delete attempt


class Acknowledger:
    """Holds received messages and applies their fates: `track` on receipt, `settle` with the outcome, `release`
    on stop. `run` does the background part (batched deletes and their retries, visibility extension) until
    `aclose`.
    """

    def __init__(
        self,
        queue: ReceiptApi,
        settings: QueueSettings,
        *,
        delete_retry_initial_seconds: float = 0.25,
        delete_retry_max_seconds: float = 30.0,
    ) -> None:
        self._queue = queue
        self._settings = settings
        self._delete_backoff = backoff.Backoff(delete_retry_initial_seconds, delete_retry_max_seconds)
        self._held: dict[str, _Held] = {}
        self._deleting: set[str] = set()  # held messages whose delete is pending
        # Orders a hand-back after any extension under way: SQS applying an older extension last would hide the
        # message again for a whole visibility timeout.
        self._visibility = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closing = False
        self._running = False
        self._closed = asyncio.Event()

    @property
    def deletes_pending(self) -> int:
        return len(self._deleting)

    def track(self, delivery: Delivery) -> bool:
        """Hold a received message. False when it is held already (a redelivery): only its newer receipt is kept."""
        held = self._held.get(delivery.message_id)
        if held is not None:
            held.receipt = delivery.receipt_handle
            return False
        self._held[delivery.message_id] = _Held(delivery.receipt_handle)
        return True

    async def settle(self, message_id: str, outcome: Outcome, *, kind: str = "unknown") -> None:
        """Count the outcome and apply its fate; a delete is queued for the next batch."""
        count(kind, outcome)
        held = self._held.get(message_id)
        if held is None or message_id in self._deleting:
            log.warning("settled a message not held", extra={"message_id": message_id, "outcome": outcome.value})
            return
        match fate(outcome, self._settings.unknown_instance_fate):
            case Fate.DELETE:
                held.due = 0.0
                self._deleting.add(message_id)
                self._deletes_changed()
                self._wake.set()
            case Fate.RETRY:
                await self._let_go(message_id, held, self._settings.retry_delay_seconds)
            case Fate.RELEASE:
                await self._let_go(message_id, held, 0)
            case Fate.LEAVE:
                del self._held[message_id]

    async def release(self, message_ids: Iterable[str], *, reason: Literal["unfinished", "received"]) -> None:
        """Hand held messages back at once (visibility 0) for another consumer; used on stop."""
        receipts = [self._held.pop(m).receipt for m in message_ids if m in self._held and m not in self._deleting]
        if not receipts:
            return
        metrics.MESSAGES_RELEASED_ON_STOP.labels(reason=reason).inc(len(receipts))
        async with self._visibility:
            failed = await self._queue.change_visibility(receipts, 0)
        if failed:
            log.warning("messages not released; they return when their visibility lapses", extra={"count": len(failed)})

    async def _let_go(self, message_id: str, held: _Held, seconds: int) -> None:
        failed = await self._queue.change_visibility([held.receipt], seconds)
        if failed:
            log.warning(
                "visibility not changed; the message returns when its visibility lapses",
                extra={"message_id": message_id, "seconds": seconds},
            )
        # Forgotten only once the call is over: cancelled before that (on stop), `release` still hands it back.
        self._held.pop(message_id, None)

    async def run(self) -> None:
        """Batched deletes with retries, and visibility extension of held messages, until `aclose`."""
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                extender = group.create_task(self._extend_visibility())
                await self._delete_until_closed()
                extender.cancel()
        finally:
            self._closed.set()

    async def aclose(self) -> None:
        """Ordered close: the delete batch in progress finishes, then every pending delete gets a last try."""
        self._closing = True
        self._wake.set()
        if self._running:
            await self._closed.wait()
        else:
            await self._last_deletes()

    async def _delete_until_closed(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            self._wake.clear()
            if not self._due(loop.time()):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(self._next_due()):
                        await self._wake.wait()
                continue
            await asyncio.sleep(_BURST_SECONDS)
            await self._delete(self._due(loop.time()))
        await self._last_deletes()

    async def _last_deletes(self) -> None:
        if self._deleting:
            await self._delete(list(self._deleting))
        if self.deletes_pending:
            log.warning(
                "stopping: messages not deleted; they will be redelivered", extra={"count": self.deletes_pending}
            )

    def _due(self, now: float) -> list[str]:
        return [m for m in self._deleting if self._held[m].due <= now]

    def _next_due(self) -> float | None:
        return min((self._held[m].due for m in self._deleting), default=None)

    async def _delete(self, message_ids: list[str]) -> None:
        sent = {self._held[m].receipt: m for m in message_ids}
        failed = set(await self._queue.delete(list(sent)))
        now = asyncio.get_running_loop().time()
        retrying = 0
        for receipt, message_id in sent.items():
            held = self._held.get(message_id)
            if held is None:
                continue
            if receipt in failed:
                held.failed_deletes += 1
                held.due = now + self._delete_backoff.seconds(held.failed_deletes)
                retrying += 1
            elif held.receipt != receipt:
                held.due = now  # redelivered meanwhile: an older handle may "succeed" without deleting
            else:
                if held.failed_deletes:
                    log.info("message deleted after retries", extra={"attempts": held.failed_deletes + 1})
                del self._held[message_id]
                self._deleting.discard(message_id)
        if retrying and not self._closing:
            log.warning("messages not deleted yet; trying again", extra={"count": retrying})
        self._deletes_changed()

    def _deletes_changed(self) -> None:
        metrics.DELETES_PENDING.set(self.deletes_pending)

    async def _extend_visibility(self) -> None:
        """Every third of the visibility timeout, push every held message's visibility out again."""
        period = self._settings.visibility_timeout_seconds / 3
        while True:
            await asyncio.sleep(period)
            receipts = [held.receipt for held in self._held.values()]
            if not receipts:
                continue
            async with self._visibility:
                failed = await self._queue.change_visibility(receipts, self._settings.visibility_timeout_seconds)
            if failed:
                log.warning("visibility not extended; trying again next period", extra={"count": len(failed)})
