"""Deliver notifications one at a time, in the order they were offered: a node's detection before its outcome.

Each is posted, and a failure that may pass (no connection, a timeout, 408, 425, 429, 5xx) is retried after the
one back-off formula (spotq/backoff.py; at least what Retry-After asks). What still fails, or is refused outright
(another 4xx), is counted as failed and logged with the reason and the node — never with the URL. The sender never
raises: a webhook cannot stop spotq.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from spotq.backoff import Backoff
from spotq.notify.notification import Notification
from spotq.notify.sink import NotificationQueue
from spotq.notify.templates import BodyTemplate
from spotq.observability import logs, metrics

log = logs.get("spotq.notify")

RESULTS = ("sent", "failed", "dropped")


@dataclass(frozen=True)
class Answer:
    """How one POST went: delivered, or why not and whether trying again may help."""

    ok: bool
    retryable: bool = False
    detail: str = ""
    """Status or error, fit for a log line: never the URL."""
    retry_after: float | None = None


class Post(Protocol):
    async def __call__(self, body: bytes) -> Answer: ...


class Sender:
    def __init__(
        self,
        queue: NotificationQueue,
        template: BodyTemplate,
        post: Post,
        *,
        retries: int,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._queue = queue
        self._template = template
        self._post = post
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep

    async def run(self) -> None:
        """Forever: take the next notification and deliver it. Cancelled mid-delivery, it counts as dropped."""
        while True:
            notification = await self._queue.get()
            try:
                await self.deliver(notification)
            except asyncio.CancelledError:
                metrics.NOTIFICATIONS.labels(result="dropped").inc()
                raise
            except Exception as exc:  # a bug here must not end the loop, nor spotq
                metrics.NOTIFICATIONS.labels(result="failed").inc()
                log.error("notification failed: internal error", extra={"error": f"{type(exc).__name__}: {exc}"})
            finally:
                self._queue.done()

    async def deliver(self, notification: Notification) -> bool:
        """Post it, retrying what may pass; True once the webhook accepted it."""
        body = self._template.render(notification)
        attempt = 0
        while True:
            attempt += 1
            answer = await self._post(body)
            if answer.ok:
                metrics.NOTIFICATIONS.labels(result="sent").inc()
                return True
            if not answer.retryable or attempt > self._retries:
                metrics.NOTIFICATIONS.labels(result="failed").inc()
                log.warning(
                    "notification failed",
                    extra={
                        "node": notification.node,
                        "reason": notification.reason,
                        "attempts": attempt,
                        "error": answer.detail,
                    },
                )
                return False
            await self._sleep(self._backoff.seconds(attempt, retry_after=answer.retry_after))
