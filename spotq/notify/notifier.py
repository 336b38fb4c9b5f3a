"""What the composition root wires when a webhook is set: the queue, the sink around the Kubernetes one, the
sender task and its orderly stop (a short grace to send what waits, then the rest dropped and counted)."""

from __future__ import annotations

import asyncio
import contextlib

from spotq.backoff import Backoff
from spotq.errors import ConfigError
from spotq.notify import config as webhook_config
from spotq.notify.config import WebhookConfig
from spotq.notify.posting import WebhookPoster
from spotq.notify.sender import RESULTS, Sender
from spotq.notify.sink import NotificationQueue, NotifyingSink
from spotq.observability import logs, metrics
from spotq.ports import EventSink
from spotq.settings import WebhookSettings

log = logs.get("spotq.notify")

BACKOFF = Backoff(initial_seconds=1.0, max_seconds=30.0, jitter=0.5)


class Notifier:
    def __init__(self, config: WebhookConfig, *, backoff: Backoff = BACKOFF) -> None:
        self.config = config
        self.queue = NotificationQueue(config.queue_size)
        self._backoff = backoff
        self._poster = WebhookPoster(config)
        for result in RESULTS:  # every result shows in /metrics from the start, at 0
            metrics.NOTIFICATIONS.labels(result=result)

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> Notifier | None:
        """None when no webhook is set; ConfigError (one line naming the setting) when one is wrong."""
        config = webhook_config.load(settings)
        if config is None:
            return None
        log.info(
            "webhook notifications configured",
            extra={
                "webhook_host": config.host,
                "template": config.template_name,
                "proxy_host": config.proxy_host or "",
                "reasons": ",".join(sorted(config.reasons)) if config.reasons else "all",
            },
        )
        try:
            return cls(config)
        except ValueError as exc:  # a URL the HTTP client cannot use after all (never repeated here)
            raise ConfigError(
                f"invalid setting SPOTQ_WEBHOOK__URL or SPOTQ_WEBHOOK__PROXY: {type(exc).__name__}"
            ) from None

    def wrap(self, events: EventSink) -> EventSink:
        return NotifyingSink(events, self.queue, reasons=self.config.reasons, cluster=self.config.cluster)

    async def run(self) -> None:
        """Send until cancelled (see `finish`)."""
        config = self.config
        async with self._poster as post:
            sender = Sender(self.queue, config.template, post, retries=config.retries, backoff=self._backoff)
            await sender.run()

    async def finish(self, sending: asyncio.Task[None]) -> None:
        """Give what waits the stop grace to be sent, then stop the sender; what is left is dropped (counted)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.stop_grace_seconds):
                await self.queue.join()
        sending.cancel()
        await asyncio.wait([sending])
        dropped = self.queue.discard()
        if dropped:
            log.warning("notifications dropped on stop", extra={"dropped": dropped})
