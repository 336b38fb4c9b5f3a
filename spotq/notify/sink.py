"""The EventSink that also notifies: every node Event goes to the Kubernetes sink unchanged and, as a
Notification, onto a bounded queue that never makes its caller wait.

The caller is the actor, between a taint and a drain: offering is put_nowait, so a full queue (a slow or dead
webhook in a mass interruption) drops the notification — counted in spotq_notifications_total{result="dropped"} —
and never delays the work the Event describes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from spotq import clock
from spotq.notify.notification import Notification
from spotq.observability import logs, metrics
from spotq.ports import EventSink, NodeRef

log = logs.get("spotq.notify")


class NotificationQueue:
    """A bounded FIFO of notifications: offer never waits; what does not fit is dropped and counted."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=size)
        self._dropping = False

    def offer(self, notification: Notification) -> bool:
        try:
            self._queue.put_nowait(notification)
        except asyncio.QueueFull:
            metrics.NOTIFICATIONS.labels(result="dropped").inc()
            if not self._dropping:  # one line when dropping starts, not one per notification
                log.warning("notification queue full: dropping notifications", extra={"size": self._queue.maxsize})
            self._dropping = True
            return False
        self._dropping = False
        return True

    async def get(self) -> Notification:
        return await self._queue.get()

    def done(self) -> None:
        self._queue.task_done()

    async def join(self) -> None:
        """Return once every notification offered has been taken and dealt with."""
        await self._queue.join()

    def discard(self) -> int:
        """Drop (and count) what is still waiting; the number dropped."""
        dropped = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            dropped += 1
        if dropped:
            metrics.NOTIFICATIONS.labels(result="dropped").inc(dropped)
        return dropped

    def __len__(self) -> int:
        return self._queue.qsize()


class NotifyingSink:
    """Wraps an EventSink: the Event as before, and a notification offered for the reasons chosen (None: all)."""

    def __init__(
        self,
        inner: EventSink,
        queue: NotificationQueue,
        *,
        reasons: frozenset[str] | None = None,
        cluster: str = "",
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self._inner = inner
        self._queue = queue
        self._reasons = reasons
        self._cluster = cluster
        self._now = now

    async def node_event(self, node: NodeRef, reason: str, message: str, *, warning: bool = False) -> None:
        if self._reasons is None or reason in self._reasons:
            self._queue.offer(
                Notification(
                    node=node.name,
                    instance_id=node.instance_id,
                    reason=reason,
                    message=message,
                    warning=warning,
                    time=self._now(),
                    cluster=self._cluster,
                )
            )
        await self._inner.node_event(node, reason, message, warning=warning)
