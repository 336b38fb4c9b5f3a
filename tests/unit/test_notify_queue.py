"""The notifying sink: every Event still reaches Kubernetes unchanged; the notification is offered without ever
waiting, and a full queue drops it (counted) instead of holding up the taint or the drain that sent it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from spotq.notify.notification import Notification
from spotq.notify.sink import NotificationQueue, NotifyingSink
from spotq.observability import metrics
from spotq.ports import NodeRef

NODE = NodeRef(
    name="ip-10-0-0-1",
    uid="u1",
    instance_id="i-0123456789abcdef0",
    hostname=None,
    in_scope=True,
    ready=True,
    resource_version="1",
)
AT = datetime(2030, 1, 1, tzinfo=UTC)


def _count(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("spotq_notifications_total", {"result": result}) or 0.0


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, bool]] = []

    async def node_event(self, node: NodeRef, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((node.name, reason, message, warning))


async def test_each_event_is_forwarded_unchanged_and_offered_as_a_notification() -> None:
    inner, queue = RecordingSink(), NotificationQueue(10)
    sink = NotifyingSink(inner, queue, cluster="prod", now=lambda: AT)
    await sink.node_event(NODE, "InterruptionNotice", "spot_interruption e-1: taint, cordon, drain by 12:02")
    await sink.node_event(NODE, "DrainTimedOut", "1 pods not drained: ns/a: PDB", warning=True)
    assert inner.events == [
        ("ip-10-0-0-1", "InterruptionNotice", "spot_interruption e-1: taint, cordon, drain by 12:02", False),
        ("ip-10-0-0-1", "DrainTimedOut", "1 pods not drained: ns/a: PDB", True),
    ]
    first, second = await queue.get(), await queue.get()
    assert first == Notification(
        "ip-10-0-0-1",
        "i-0123456789abcdef0",
        "InterruptionNotice",
        "spot_interruption e-1: taint, cordon, drain by 12:02",
        False,
        AT,
        "prod",
    )
    assert (second.reason, second.warning) == ("DrainTimedOut", True)


async def test_a_reason_not_chosen_is_forwarded_but_not_offered() -> None:
    inner, queue = RecordingSink(), NotificationQueue(10)
    sink = NotifyingSink(inner, queue, reasons=frozenset({"DrainTimedOut", "DrainBlocked"}))
    await sink.node_event(NODE, "InterruptionNotice", "m")
    await sink.node_event(NODE, "DrainBlocked", "m", warning=True)
    assert [e[1] for e in inner.events] == ["InterruptionNotice", "DrainBlocked"]
    assert len(queue) == 1 and (await queue.get()).reason == "DrainBlocked"


async def test_a_full_queue_drops_and_counts_and_never_waits() -> None:
    inner, queue = RecordingSink(), NotificationQueue(2)
    sink = NotifyingSink(inner, queue)
    dropped = _count("dropped")
    # Nothing takes notifications off the queue: had offering waited, this would never finish (bounded by 1 s).
    async with asyncio.timeout(1):
        for n in range(50):
            await sink.node_event(NODE, "DrainFinished", f"evicted {n} pods")
    assert len(inner.events) == 50  # every Event reached Kubernetes
    assert len(queue) == 2 and _count("dropped") - dropped == 48
    assert [(await queue.get()).message for _ in range(2)] == ["evicted 0 pods", "evicted 1 pods"]  # oldest kept


async def test_offering_yields_to_no_one() -> None:
    # An offer completes without a single suspension: no other task runs between the Event and the next step.
    inner, queue = RecordingSink(), NotificationQueue(1)
    ran = asyncio.Event()

    async def other() -> None:
        ran.set()

    task = asyncio.create_task(other())
    queue.offer(Notification("n", None, "DrainFinished", "m", False, AT))
    queue.offer(Notification("n", None, "DrainFinished", "m", False, AT))  # full: dropped, still no wait
    assert not ran.is_set()
    await task
    assert inner.events == []


async def test_discard_counts_what_is_left_as_dropped() -> None:
    queue = NotificationQueue(5)
    for _ in range(3):
        queue.offer(Notification("n", None, "DrainFinished", "m", False, AT))
    dropped = _count("dropped")
    assert queue.discard() == 3 and _count("dropped") - dropped == 3
    async with asyncio.timeout(1):
        await queue.join()  # nothing counts as pending any more
