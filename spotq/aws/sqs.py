"""SQS: receive with long polling, delete and change visibility in batches of ten."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spotq.errors import TransientError
from spotq.notices import Delivery
from spotq.observability import metrics

log = logging.getLogger(__name__)

# SQS takes at most ten entries per batch call and returns at most ten messages per receive.
BATCH = 10


class Queue:
    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self.url = url

    async def receive(self, max_messages: int, wait_seconds: int, visibility_seconds: int) -> list[Delivery]:
        try:
            reply = await self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(BATCH, max_messages)),
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=visibility_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        except (ClientError, BotoCoreError) as exc:
            metrics.API_ERRORS.labels(api="sqs", operation="receive_message").inc()
            raise TransientError(f"receive_message: {exc}") from exc
        deliveries = []
        for message in reply.get("Messages", []):
            attributes = message.get("Attributes", {})
            sent = attributes.get("SentTimestamp")
            deliveries.append(
                Delivery(
                    message_id=message["MessageId"],
                    body=message.get("Body", ""),
                    receipt_handle=message["ReceiptHandle"],
                    receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
                    sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
                )
            )
        return deliveries

    async def delete(self, receipts: Sequence[str]) -> list[str]:
        """Delete in batches; returns the receipts that failed (the caller retries or lets them return)."""
        failed: list[str] = []
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start : start + BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)]
            try:
                reply = await self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                metrics.API_ERRORS.labels(api="sqs", operation="delete_message_batch").inc()
                log.warning("delete batch failed", extra={"error": str(exc)[:200], "messages": len(chunk)})
                failed.extend(chunk)
                continue
            for entry in reply.get("Failed", []):
                metrics.API_ERRORS.labels(api="sqs", operation="delete_message_batch").inc()
                failed.append(chunk[int(entry["Id"])])
        return failed

    async def change_visibility(self, receipts: Sequence[str], seconds: int) -> None:
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start : start + BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds} for i, r in enumerate(chunk)]
            try:
                reply = await self._client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                metrics.API_ERRORS.labels(api="sqs", operation="change_message_visibility_batch").inc()
                log.warning("visibility batch failed", extra={"error": str(exc)[:200], "messages": len(chunk)})
                continue
            for _ in reply.get("Failed", []):
                metrics.API_ERRORS.labels(api="sqs", operation="change_message_visibility_batch").inc()

    async def reachable(self) -> bool:
        try:
            await self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        except (ClientError, BotoCoreError):
            return False
        return True
