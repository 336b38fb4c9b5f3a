"""A drain over the real PodClient and the fake transport: its pod watch is watching.list_and_watch, so a watch
that expires (410) or breaks mid-drain is relisted, and the relist tells the drain what it missed — a pod deleted
meanwhile is gone, a pod bound meanwhile is evicted too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from spotq import draining
from spotq.draining import DrainOptions
from spotq.kube.pods import PodClient
from spotq.kube.transport import WatchStreamError
from tests.unit.fake_transport import HOLD, FakeTransport
from tests.unit.test_pod_client import FAST, expired, initial_end, pod, restarts

JSON = dict[str, Any]
OPTIONS = DrainOptions(retry_initial_seconds=0.01, retry_max_seconds=0.05, settle_seconds=0.0)
EVICTED = {"type": "EVICTED"}  # a mark in a stream: what follows comes once the drain has evicted a pod


@dataclass
class EvictingTransport(FakeTransport):
    """The fake transport, whose streams can wait at EVICTED for the drain's first eviction."""

    evicted: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        if kwargs.get("operation") == "evict_pod":
            self.evicted.set()
        return await super().request(method, path, **kwargs)

    async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        async for event in super().watch(path, query, operation=operation):
            if event is EVICTED:
                await self.evicted.wait()
                continue
            yield event


def added(name: str, version: str) -> JSON:
    return {"type": "ADDED", "object": pod(name, version)}


async def drain(kube: FakeTransport, seconds: float = 5.0) -> draining.DrainReport:
    deadline = asyncio.get_running_loop().time() + seconds
    return await draining.drain("n1", deadline, PodClient(kube, backoff=FAST), OPTIONS, asyncio.Semaphore(10))


async def test_a_pod_deleted_while_the_watch_had_expired_is_seen_gone_on_the_relist() -> None:
    kube = EvictingTransport(
        answers={"evict_pod": [{}]},
        streams={
            # The DELETED event of a is lost: the watch expires after the eviction, the relist no longer has it.
            "watch_list_pods": [[added("a", "5"), initial_end("8"), EVICTED, expired()], [initial_end("12"), HOLD]]
        },
    )
    before = restarts("expired")
    async with asyncio.timeout(5):
        report = await drain(kube)
    assert report.complete and report.evicted == ["ns/a"]
    assert kube.operations() == ["watch_list_pods", "evict_pod", "watch_list_pods"]
    assert restarts("expired") == before + 1


async def test_a_broken_stream_mid_drain_is_relisted_after_a_back_off_and_a_pod_bound_meanwhile_is_evicted() -> None:
    cut = WatchStreamError("watch_list_pods: watch line is not JSON")
    kube = EvictingTransport(
        answers={"evict_pod": [{}, {}]},
        streams={
            "watch_list_pods": [
                [added("a", "5"), initial_end("8"), EVICTED, cut],
                # a went while the watch was down; late was bound meanwhile, and goes once evicted.
                [added("late", "11"), initial_end("12"), {"type": "DELETED", "object": pod("late", "13")}, HOLD],
            ]
        },
    )
    before = restarts("stream")
    async with asyncio.timeout(5):
        report = await drain(kube)
    assert report.complete and sorted(report.evicted) == ["ns/a", "ns/late"]
    assert kube.operations().count("watch_list_pods") == 2 and kube.operations().count("evict_pod") == 2
    assert restarts("stream") == before + 1


async def test_a_node_whose_pods_never_list_is_not_reported_drained() -> None:
    kube = FakeTransport(streams={"watch_list_pods": [[WatchStreamError("watch_list_pods: cut")]] * 3})
    report = await drain(kube, seconds=0.3)
    assert report.timed_out and not report.complete
    assert kube.operations().count("watch_list_pods") >= 2  # retried until the deadline
