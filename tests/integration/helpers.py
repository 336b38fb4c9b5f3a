"""Small shared waits and reads for integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from testenv import MotoServer


def wait_until(what: str, check: Callable[[], Any], timeout: float = 90.0, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def queue_depth(moto: MotoServer, url: str) -> int:
    """Messages in the queue, visible or in flight."""
    attributes = moto.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
