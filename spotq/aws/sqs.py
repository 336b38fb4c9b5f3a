"""SQS: receive with long polling, delete and change visibility in batches of ten."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spotq.errors import ConfigError, TransientError
from spotq.notices import Delivery
from spotq.observability import metrics

log = logging.getLogger(__name__)

# SQS takes at most ten entries per batch call and returns at most ten messages per receive.
BATCH = 10
# Per-entry error codes saying a receipt no longer holds its message (deleted, or its visibility lapsed).
_GONE = ("ReceiptHandleIsInvalid", "MessageNotInflight")


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
        """Delete in batches; returns the receipts to try again (a receipt SQS calls invalid is over, not returned)."""
        return await self._batches("delete_message_batch", "delete", receipts, {})

    async def change_visibility(self, receipts: Sequence[str], seconds: int) -> list[str]:
        """Set visibility in batches (0 hands the message back); returns the receipts to try again, as `delete`."""
        return await self._batches(
            "change_message_visibility_batch", "visibility", receipts, {"VisibilityTimeout": seconds}
        )

    async def _batches(self, operation: str, what: str, receipts: Sequence[str], fields: dict[str, int]) -> list[str]:
        failed: list[str] = []
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start : start + BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": r, **fields} for i, r in enumerate(chunk)]
            try:
                reply = await getattr(self._client, operation)(QueueUrl=self.url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                metrics.API_ERRORS.labels(api="sqs", operation=operation).inc()
                metrics.SQS_RECEIPTS_FAILED.labels(operation=operation, reason="error").inc(len(chunk))
                log.warning(f"{what} batch failed", extra={"error": str(exc)[:200], "messages": len(chunk)})
                failed.extend(chunk)
                continue
            for entry in reply.get("Failed", []):
                metrics.API_ERRORS.labels(api="sqs", operation=operation).inc()
                code = str(entry.get("Code", ""))
                if code.endswith(_GONE):
                    # Deleted, or visible again for someone else: no retry of this receipt can help.
                    metrics.SQS_RECEIPTS_FAILED.labels(operation=operation, reason="gone").inc()
                    log.info(f"{what}: receipt gone", extra={"code": code})
                    continue
                metrics.SQS_RECEIPTS_FAILED.labels(operation=operation, reason="error").inc()
                log.warning(f"{what}: entry failed", extra={"code": code, "error": str(entry.get("Message"))[:200]})
                failed.append(chunk[int(entry["Id"])])
        return failed

    async def check_exists(self) -> None:
        """At start: a queue that does not exist is a wrong setting (ConfigError naming it); network trouble is
        only logged (the receivers retry)."""
        try:
            await self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if "NonExistentQueue" in code or code == "QueueDoesNotExist":
                raise ConfigError(f"invalid setting SPOTQ_QUEUE__URL: no such queue: {self.url}") from None
            log.warning("queue check failed", extra={"error": str(exc)[:200]})
        except BotoCoreError as exc:
            log.warning("queue not reachable yet", extra={"error": str(exc)[:200]})

    async def reachable(self) -> bool:
        """One GetQueueAttributes; the caller bounds it in time (the SDK would retry for minutes)."""
        try:
            await self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        except (ClientError, BotoCoreError):
            return False
        return True
