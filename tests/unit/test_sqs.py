"""The SQS edge's batch calls: which receipts come back to the caller to retry, which are gone, how both count."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from spotq.aws.sqs import Queue
from spotq.observability import metrics


class StubSqs:
    """Answers batch calls like SQS: an error for the whole call, or per-entry failures by receipt."""

    def __init__(self, *, error: str | None = None, entry_codes: dict[str, str] | None = None) -> None:
        self.error = error
        self.entry_codes = entry_codes or {}
        self.calls: list[list[dict[str, Any]]] = []

    def _answer(self, operation: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(entries)
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "no"}}, operation)
        failed = [
            {"Id": e["Id"], "SenderFault": True, "Code": self.entry_codes[e["ReceiptHandle"]], "Message": "no"}
            for e in entries
            if e["ReceiptHandle"] in self.entry_codes
        ]
        return {
            "Successful": [{"Id": e["Id"]} for e in entries if e["ReceiptHandle"] not in self.entry_codes],
            "Failed": failed,
        }

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        return self._answer("DeleteMessageBatch", Entries)

    async def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        return self._answer("ChangeMessageVisibilityBatch", Entries)


def failed_count(operation: str, reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "spotq_sqs_receipts_failed_total", {"operation": operation, "reason": reason}
    )
    return value or 0.0


async def test_a_failed_visibility_call_returns_its_receipts_and_counts_them() -> None:
    before = failed_count("change_message_visibility_batch", "error")
    queue = Queue(StubSqs(error="ServiceUnavailable"), "https://sqs/q")
    receipts = [f"r{i}" for i in range(12)]
    assert await queue.change_visibility(receipts, 60) == receipts
    assert failed_count("change_message_visibility_batch", "error") - before == 12


async def test_per_entry_failures_come_back_but_gone_receipts_do_not() -> None:
    stub = StubSqs(
        entry_codes={
            "slow": "InternalError",
            "stale": "ReceiptHandleIsInvalid",
            "lapsed": "AWS.SimpleQueueService.MessageNotInflight",
        }
    )
    queue = Queue(stub, "https://sqs/q")
    gone_before = failed_count("change_message_visibility_batch", "gone")
    assert await queue.change_visibility(["ok", "slow", "stale", "lapsed"], 0) == ["slow"]
    assert failed_count("change_message_visibility_batch", "gone") - gone_before == 2


async def test_a_delete_whose_receipt_is_invalid_is_over_not_retried() -> None:
    queue = Queue(StubSqs(entry_codes={"stale": "ReceiptHandleIsInvalid", "slow": "InternalError"}), "https://sqs/q")
    gone_before = failed_count("delete_message_batch", "gone")
    assert await queue.delete(["ok", "stale", "slow"]) == ["slow"]
    assert failed_count("delete_message_batch", "gone") - gone_before == 1
