"""The one list+watch loop: pages, resumes, relists, backs off — and never returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from spotq.errors import ApiError, TransientError
from spotq.kube import watching
from spotq.kube.client import KubeClient
from spotq.kube.transport import WatchStreamError
from spotq.observability import metrics
from spotq.settings import KubeSettings
from tests.unit.fake_transport import HOLD, FakeTransport

JSON = dict[str, Any]


@dataclass(frozen=True)
class RecordingBackoff(watching.Backoff):
    """The real delays, recorded instead of slept; pause number `hold_after` (0-based) waits for `release`."""

    pauses: list[tuple[float, bool]] = field(default_factory=list)
    hold_after: int | None = None
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def pause(self, failures: int, *, denied: bool = False, answering: asyncio.Event | None = None) -> None:
        self.pauses.append((self.seconds(failures, denied=denied), denied))
        if self.hold_after is not None and len(self.pauses) == self.hold_after + 1:
            self.held.set()
            await self.release.wait()


@dataclass
class Mirror:
    """What a mirror sees through the callbacks."""

    lists: list[list[str]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    lost: int = 0

    async def on_list(self, items: AsyncIterator[JSON]) -> None:
        self.lists.append([item["metadata"]["name"] async for item in items])

    async def on_event(self, kind: str, obj: JSON) -> None:
        self.events.append((kind, obj["metadata"]["name"]))

    def on_lost(self) -> None:
        self.lost += 1


def thing(name: str, version: str = "1") -> JSON:
    return {"metadata": {"name": name, "resourceVersion": version}}


def page(*names: str, version: str = "10", token: str = "") -> JSON:
    return {"metadata": {"resourceVersion": version, "continue": token}, "items": [thing(n) for n in names]}


def restarts(reason: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("spotq_watch_restarts_total", {"resource": "things", "reason": reason}) or 0.0
    )


RESOURCE = watching.Resource("things", "/api/v1/things", {"fieldSelector": "metadata.name=a"})


async def follow(transport: FakeTransport, mirror: Mirror, backoff: watching.Backoff) -> asyncio.Task[None]:
    return asyncio.create_task(
        watching.list_and_watch(
            transport,
            RESOURCE,
            on_list=mirror.on_list,
            on_event=mirror.on_event,
            on_lost=mirror.on_lost,
            backoff=backoff,
        )
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_lists_every_page_then_watches_from_the_lists_version_in_scope() -> None:
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}
    transport = FakeTransport(
        answers={"list_things": [page("a", "b", token="t1"), page("c", version="12")]},
        streams={"watch_things": [[{"type": "ADDED", "object": thing("d", "13")}, bookmark], [HOLD]]},
    )
    mirror = Mirror()
    task = await follow(transport, mirror, RecordingBackoff())
    try:
        await transport.wait_for_calls("watch_things", 2)
    finally:
        await stop(task)
    lists = [call.query for call in transport.calls if call.operation == "list_things"]
    assert lists == [
        {"limit": "500", "fieldSelector": "metadata.name=a"},
        {"limit": "500", "continue": "t1", "fieldSelector": "metadata.name=a"},
    ]
    watches = [call.query for call in transport.calls if call.operation == "watch_things"]
    # The watch the server ended resumes from the bookmark, without a relist.
    assert [(q["resourceVersion"], q["fieldSelector"]) for q in watches] == [
        ("12", "metadata.name=a"),
        ("15", "metadata.name=a"),
    ]
    assert mirror.lists == [["a", "b", "c"]] and mirror.events == [("ADDED", "d")] and mirror.lost == 0


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (WatchStreamError("watch_things: watch line is not JSON"), "stream"),
        (TransientError("watch_things: ClientPayloadError"), "network"),
        (ApiError(500, "Internal Server Error", "etcd"), "api_error"),
        ({"type": "ERROR", "object": {"code": 500, "reason": "InternalError", "message": "x"}}, "api_error"),
        (KeyError("metadata"), "unexpected"),
    ],
    ids=["cut-line", "network", "http-500", "error-event", "a-bug"],
)
async def test_a_broken_watch_backs_off_relists_and_goes_on(failure: JSON | BaseException, reason: str) -> None:
    transport = FakeTransport(
        answers={"list_things": [page("a"), page("a", "b", version="20")]},
        streams={"watch_things": [[{"type": "ADDED", "object": thing("x", "11")}, failure], [HOLD]]},
    )
    mirror, backoff, before = Mirror(), RecordingBackoff(), restarts(reason)
    task = await follow(transport, mirror, backoff)
    try:
        await transport.wait_for_calls("watch_things", 2)
    finally:
        await stop(task)
    assert mirror.lists == [["a"], ["a", "b"]] and mirror.lost == 1
    assert len(backoff.pauses) == 1 and restarts(reason) - before == 1
    assert [c.query["resourceVersion"] for c in transport.calls if c.operation == "watch_things"] == ["10", "20"]


async def test_failures_in_a_row_wait_longer_up_to_the_cap_and_an_event_resets_the_count() -> None:
    broken = TransientError("list_things: connection refused")
    lists: list[JSON | BaseException] = [broken] * 8
    transport = FakeTransport(
        answers={"list_things": [*lists, page("a"), page("a")]},
        streams={"watch_things": [[{"type": "ADDED", "object": thing("x", "11")}, broken], [HOLD]]},
    )
    backoff = RecordingBackoff(initial_seconds=1, max_seconds=30)
    task = await follow(transport, Mirror(), backoff)
    try:
        await transport.wait_for_calls("watch_things", 2)
    finally:
        await stop(task)
    fulls = [1, 2, 4, 8, 16, 30, 30, 30, 1]  # the ninth failure came after an event
    assert len(backoff.pauses) == len(fulls)
    for (seconds, denied), full in zip(backoff.pauses, fulls, strict=True):
        assert full / 2 <= seconds <= full and not denied


def test_the_backoff_is_jittered_and_denied_requests_wait_longer() -> None:
    backoff = watching.Backoff()
    spread = {round(backoff.seconds(3), 6) for _ in range(50)}
    assert len(spread) > 1 and all(2 <= s <= 4 for s in spread)
    assert all(15 <= backoff.seconds(n) <= 30 for n in (6, 10, 1000))
    assert all(30 <= backoff.seconds(n, denied=True) <= 60 for n in (7, 10, 1000))


async def test_a_watch_that_keeps_ending_without_a_word_is_paced_not_spun() -> None:
    transport = FakeTransport(answers={"list_things": [page("a")]}, streams={"watch_things": [[], [], [HOLD]]})
    backoff = RecordingBackoff()
    task = await follow(transport, Mirror(), backoff)
    try:
        await transport.wait_for_calls("watch_things", 3)
    finally:
        await stop(task)
    assert len(backoff.pauses) == 2 and transport.operations().count("list_things") == 1


async def test_a_back_off_ends_within_a_second_of_the_api_server_answering_again() -> None:
    answering = asyncio.Event()  # cleared: the client's last request found no server
    backoff = watching.Backoff(initial_seconds=30.0, max_seconds=30.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(backoff.pause(3, answering=answering))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    answering.set()  # another request got an answer
    await asyncio.wait_for(waiting, timeout=2.0)
    assert loop.time() - started < 1.5  # not the 15-30 s back-off


async def test_the_client_says_whether_the_api_server_answers() -> None:
    transport = FakeTransport(
        answers={"get": [TransientError("refused"), {"kind": "Node"}, ApiError(503, "x", ""), ApiError(404, "x", "")]}
    )
    client = KubeClient(transport, KubeSettings())
    seen = []
    for _ in range(4):
        with contextlib.suppress(TransientError):
            await client.request("GET", "/api/v1/nodes/n", operation="get")
        seen.append(client.answering.is_set())
    assert seen == [False, True, False, True]  # no connection, an answer, a 503, a 404 (an answer)
