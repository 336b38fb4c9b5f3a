"""The pod watch quiet drains share (spotq.kube.deletions): one watch for every follower, deletions only, replayed
to a follower that joins late, and LostError (relist) whenever it cannot vouch for a follower's deletions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import pytest

from spotq.errors import ApiError
from spotq.kube import deletions, watching
from spotq.kube.deletions import LostError, SharedDeletions

JSON = dict[str, Any]
FAST = watching.Backoff(initial_seconds=0.01, max_seconds=0.02)


@dataclass
class LiveWatches:
    """A transport whose watch streams the test feeds: each watch takes the next queue; None ends the stream."""

    queries: list[dict[str, str]] = field(default_factory=list)
    feeds: list[asyncio.Queue[JSON | BaseException | None]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self, *args: Any, **kwargs: Any) -> JSON:
        raise AssertionError("the shared watch lists nothing")

    async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        assert path == "/api/v1/pods" and operation == "watch_pods_deleted"
        self.queries.append(dict(query))
        feed: asyncio.Queue[JSON | BaseException | None] = asyncio.Queue()
        self.feeds.append(feed)
        self.opened.set()
        while (item := await feed.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def send(self, item: JSON | BaseException | None) -> None:
        self.feeds[-1].put_nowait(item)


def event(kind: str, name: str, node: str, version: int) -> JSON:
    return {
        "type": kind,
        "object": {
            "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "resourceVersion": str(version)},
            "spec": {"nodeName": node},
        },
    }


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_watch_serves_every_follower_with_its_own_nodes_deletions() -> None:
    live = LiveWatches()
    shared = SharedDeletions(live, backoff=FAST)
    seen: dict[str, list[str]] = {"n1": [], "n2": []}
    a = asyncio.create_task(shared.follow("n1", 100, lambda pod: seen["n1"].append(pod.name)))
    await live.opened.wait()
    b = asyncio.create_task(shared.follow("n2", 105, lambda pod: seen["n2"].append(pod.name)))
    await settle()
    live.send(event("MODIFIED", "a", "n1", 110))  # not a deletion: nothing to pass on
    live.send(event("DELETED", "a", "n1", 111))
    live.send(event("DELETED", "b", "n2", 112))
    live.send(event("DELETED", "c", "n3", 113))  # nobody follows n3
    await settle()
    assert seen == {"n1": ["a"], "n2": ["b"]}
    assert len(live.queries) == 1 and live.queries[0]["resourceVersion"] == "100"  # the first follower's version
    for task in (a, b):
        task.cancel()


async def test_a_follower_joining_late_gets_the_deletions_it_missed_and_none_it_saw() -> None:
    live = LiveWatches()
    shared = SharedDeletions(live, backoff=FAST)
    first = asyncio.create_task(shared.follow("n1", 100, lambda pod: None))
    await live.opened.wait()
    live.send(event("DELETED", "old", "n2", 110))  # before n2's view (120): n2 has seen it itself
    live.send(event("DELETED", "missed", "n2", 130))  # after n2's view, before it joined
    await settle()
    seen: list[str] = []
    late = asyncio.create_task(shared.follow("n2", 120, lambda pod: seen.append(pod.name)))
    await settle()
    assert seen == ["missed"]
    for task in (first, late):
        task.cancel()


async def test_a_follower_older_than_what_is_remembered_must_relist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deletions, "REMEMBERED", 2)
    live = LiveWatches()
    shared = SharedDeletions(live, backoff=FAST)
    first = asyncio.create_task(shared.follow("n1", 100, lambda pod: None))
    await live.opened.wait()
    for version in (110, 120, 130):  # 110 is forgotten: deletions after 110 only are vouched for
        live.send(event("DELETED", f"p{version}", "n2", version))
    await settle()
    with pytest.raises(LostError):
        await shared.follow("n2", 105, lambda pod: None)
    covered = asyncio.create_task(shared.follow("n2", 110, lambda pod: None))
    await settle()
    assert not covered.done()
    for task in (first, covered):
        task.cancel()


async def test_a_watch_the_server_ends_is_resumed_from_where_it_was() -> None:
    live = LiveWatches()
    shared = SharedDeletions(live, backoff=FAST)
    seen: list[str] = []
    follower = asyncio.create_task(shared.follow("n1", 100, lambda pod: seen.append(pod.name)))
    await live.opened.wait()
    live.send({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}})
    live.send(None)  # the server's timeout
    async with asyncio.timeout(2):
        while len(live.queries) < 2:
            await asyncio.sleep(0.01)
    assert live.queries[1]["resourceVersion"] == "150"
    live.send(event("DELETED", "a", "n1", 151))
    await settle()
    assert seen == ["a"] and not follower.done()
    follower.cancel()


@pytest.mark.parametrize(
    "breaks",
    [
        [ApiError(410, "Gone", "too old resource version")],
        [ApiError(500, "Internal Server Error")] * 3,
        [{"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}],
    ],
    ids=["gone", "failing", "error-event"],
)
async def test_every_follower_relists_when_the_watch_cannot_go_on(breaks: list[JSON | BaseException]) -> None:
    live = LiveWatches()
    shared = SharedDeletions(live, backoff=FAST)
    followers = [asyncio.create_task(shared.follow(node, 100, lambda pod: None)) for node in ("n1", "n2")]
    await live.opened.wait()
    for i, item in enumerate(breaks):  # each failure but the last is resumed from: a new watch, a new feed
        async with asyncio.timeout(2):
            while len(live.feeds) < i + 1:
                await asyncio.sleep(0.01)
        live.feeds[i].put_nowait(item)
    for follower in followers:
        with pytest.raises(LostError):
            async with asyncio.timeout(2):
                await follower
    assert not shared.running
    # The next follower starts a new watch from its own version.
    again = asyncio.create_task(shared.follow("n1", 500, lambda pod: None))
    async with asyncio.timeout(2):
        while live.queries[-1]["resourceVersion"] != "500":
            await asyncio.sleep(0.01)
    again.cancel()


async def test_the_watch_ends_a_while_after_its_last_follower_leaves() -> None:
    live = LiveWatches()
    shared = SharedDeletions(live, backoff=FAST, linger_seconds=0.05)
    follower = asyncio.create_task(shared.follow("n1", 100, lambda pod: None))
    await live.opened.wait()
    follower.cancel()
    await settle()
    assert shared.running  # lingers for the next drain to go quiet
    rejoined = asyncio.create_task(shared.follow("n2", 100, lambda pod: None))
    await asyncio.sleep(0.1)
    assert shared.running and len(live.queries) == 1  # the same watch serves the newcomer
    rejoined.cancel()
    await asyncio.sleep(0.1)
    assert not shared.running


def test_versions_are_compared_as_numbers_only_when_they_are_numbers() -> None:
    assert deletions.version_number("12345") == 12345
    assert deletions.version_number("") is None
    assert deletions.version_number("abc") is None
