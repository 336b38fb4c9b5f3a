"""Bounded waits with a progress line every 10 s, shared by the phases."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.console import say
from bench.sqs_endpoint import SqsEndpoint


def wait_for(what: str, done: Callable[[], bool], timeout: float, progress: Callable[[], str] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    last = 0.0
    while time.monotonic() < deadline:
        if done():
            return True
        if progress is not None and time.monotonic() - last >= 10:
            last = time.monotonic()
            say(f"  {what}: {progress()}")
        time.sleep(0.5)
    say(f"  {what}: not reached within {timeout:.0f}s")
    return False


def queue_settled(client: Any, queue_url: str) -> bool:
    """No message left in the queue, visible or in flight (`client`: a boto3 SQS client)."""
    attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0


def wait_queue_empty(endpoint: SqsEndpoint, queue_url: str, timeout: float = 60.0) -> float | None:
    client = endpoint.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queue_settled(client, queue_url):
            return time.time()
        time.sleep(0.5)
    return None
