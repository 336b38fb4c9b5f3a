"""PodClient.follow_node over the fake transport: the pods and the watch in one request (watch-list), a list and a
watch where the server refuses it, and watching.list_and_watch's relists (410 at once, anything else after a
back-off) for the drain's pod watch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from spotq.errors import ApiError, TransientError
from spotq.kube import watching
from spotq.kube.pods import PodClient
from spotq.kube.transport import WatchStreamError
from spotq.observability import metrics
from spotq.ports import Pod
from tests.unit.fake_transport import HOLD, Call, FakeTransport

JSON = dict[str, Any]
FAST = watching.Backoff(initial_seconds=0.01, max_seconds=0.01, denied_max_seconds=0.01)


def pod(name: str, version: str) -> JSON:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": version},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }


def initial_end(version: str) -> JSON:
    annotations = {"k8s.io/initial-events-end": "true"}
    return {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": version, "annotations": annotations}}}


def listed() -> JSON:
    return {"metadata": {"resourceVersion": "7"}, "items": [pod("a", "5")]}


def expired() -> JSON:
    return {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old resource version"}}


def restarts(reason: str) -> float:
    labels = {"resource": "pods", "reason": reason}
    return metrics.REGISTRY.get_sample_value("spotq_watch_restarts_total", labels) or 0.0


REFUSED = ApiError(422, "Unprocessable Entity", "sendInitialEvents is forbidden")  # a server without watch-list


@dataclass
class Follower:
    """What a drain's watcher gets through follow_node's callbacks."""

    lists: list[list[str]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_list(self, pods: list[Pod]) -> None:
        self.lists.append([p.name for p in pods])
        self._changed.set()

    def on_event(self, kind: str, pod: Pod) -> None:
        self.events.append((kind, pod.name))
        self._changed.set()

    async def seen(self, predicate: Callable[[], object]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    async def follow(self, client: PodClient, until: Awaitable[None]) -> None:
        """follow_node until `until` is done (5 s at most), then cancel it; it must not have ended by itself."""
        task = asyncio.create_task(client.follow_node("n1", self.on_list, self.on_event))
        try:
            async with asyncio.timeout(5):
                await until
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_watch_list_gives_the_pods_and_then_the_live_watch_from_one_request() -> None:
    later = {"type": "DELETED", "object": pod("a", "9")}
    kube = FakeTransport(
        streams={"watch_list_pods": [[{"type": "ADDED", "object": pod("a", "5")}, initial_end("8"), later, HOLD]]}
    )
    seen = Follower()
    await seen.follow(PodClient(kube), seen.seen(lambda: seen.events))
    assert seen.lists == [["a"]] and seen.events == [("DELETED", "a")]
    query = kube.calls[0].query
    assert query["sendInitialEvents"] == "true" and query["resourceVersionMatch"] == "NotOlderThan"
    assert query["fieldSelector"] == "spec.nodeName=n1"
    assert kube.operations() == ["watch_list_pods"] and kube.watches_closed == 1


async def test_a_server_without_watch_list_gets_a_list_and_a_watch_and_is_not_asked_again() -> None:
    kube = FakeTransport(answers={"list_pods": [listed(), listed()]}, streams={"watch_list_pods": [[REFUSED]]})
    client = PodClient(kube)
    for watches in (1, 2):
        seen = Follower()
        await seen.follow(client, kube.wait_for_calls("watch_pods", watches))
        assert seen.lists == [["a"]]
    assert kube.operations() == ["watch_list_pods", "list_pods", "watch_pods", "list_pods", "watch_pods"]
    watch = kube.calls[-1].query  # the refusal is remembered
    assert watch["resourceVersion"] == "7" and watch["fieldSelector"] == "spec.nodeName=n1"


async def test_a_watch_that_ends_before_the_initial_state_falls_back_to_a_list() -> None:
    kube = FakeTransport(
        answers={"list_pods": [listed()]}, streams={"watch_list_pods": [[{"type": "ADDED", "object": pod("a", "5")}]]}
    )
    seen = Follower()
    await seen.follow(PodClient(kube), kube.wait_for_calls("watch_pods", 1))
    assert seen.lists == [["a"]], "a partial initial state is never handed on"
    assert kube.operations() == ["watch_list_pods", "list_pods", "watch_pods"]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (ApiError(500, "Internal Server Error", "etcd down"), "api_error"),
        (WatchStreamError("watch_list_pods: watch line is not JSON"), "stream"),
    ],
    ids=["http-500", "cut-line"],
)
async def test_other_errors_are_retried_not_mistaken_for_a_missing_feature(
    failure: TransientError, reason: str
) -> None:
    first = [{"type": "ADDED", "object": pod("a", "5")}, failure]
    kube = FakeTransport(
        streams={"watch_list_pods": [first, [{"type": "ADDED", "object": pod("a", "5")}, initial_end("8"), HOLD]]}
    )
    before = restarts(reason)
    seen = Follower()
    await seen.follow(PodClient(kube, backoff=FAST), seen.seen(lambda: seen.lists))
    assert seen.lists == [["a"]], "a failure must not pass as an empty node"
    assert kube.operations() == ["watch_list_pods", "watch_list_pods"]  # still asked for watch-list
    assert restarts(reason) == before + 1


async def test_an_rbac_refusal_is_not_mistaken_for_a_server_without_watch_list() -> None:
    # Right after an API server restart its RBAC cache is cold: the watch-list request gets a 403 that names the
    # user, not the feature. It is retried as a watch-list once RBAC answers, not turned into list+watch for good.
    denied = ApiError(403, "Forbidden", 'pods is forbidden: User "system:serviceaccount:s:spotq" cannot watch')
    kube = FakeTransport(
        streams={"watch_list_pods": [[denied], [{"type": "ADDED", "object": pod("a", "5")}, initial_end("8"), HOLD]]}
    )
    seen = Follower()
    await seen.follow(PodClient(kube, backoff=FAST), seen.seen(lambda: seen.lists))
    assert seen.lists == [["a"]]
    assert kube.operations() == ["watch_list_pods", "watch_list_pods"]


async def test_an_expired_watch_relists_at_once_and_a_broken_one_after_a_back_off() -> None:
    cut = WatchStreamError("watch_list_pods: watch line is not JSON")
    kube = FakeTransport(
        streams={
            "watch_list_pods": [
                [{"type": "ADDED", "object": pod("a", "5")}, initial_end("8"), expired()],
                [{"type": "ADDED", "object": pod("b", "9")}, initial_end("10"), cut],
                [initial_end("12"), {"type": "ADDED", "object": pod("c", "13")}, HOLD],
            ]
        }
    )
    expired_before, cut_before = restarts("expired"), restarts("stream")
    seen = Follower()
    await seen.follow(PodClient(kube, backoff=FAST), seen.seen(lambda: seen.events))
    assert seen.lists == [["a"], ["b"], []] and seen.events == [("ADDED", "c")]
    assert restarts("expired") == expired_before + 1 and restarts("stream") == cut_before + 1


class _Held(FakeTransport):
    """Holds each eviction until `release` is set, then answers it (or raises `error`); says which ended how."""

    def __init__(self, error: BaseException | None = None) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.error = error
        self.ended: list[str] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        await self._record_call(kwargs["operation"])
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.ended.append("cut off")
            raise
        self.ended.append("answered")
        if self.error is not None:
            raise self.error
        return {}

    async def _record_call(self, operation: str) -> None:
        self.calls.append(Call("POST", operation, {}))


def a_pod() -> Pod:
    return Pod(namespace="ns", name="a", uid="uid-a", phase="Running", grace_seconds=5, controller_kind="ReplicaSet")


@pytest.mark.parametrize("error", [None, ApiError(429, "Too Many Requests", "budget")])
async def test_an_eviction_sent_runs_to_its_answer_when_the_drain_that_sent_it_stops(
    error: BaseException | None,
) -> None:
    # A fenced drain (its replica's Lease stalled with the API server) used to cut its eviction off: the server
    # admitted it in the PDB and did not delete the pod (504, "context canceled"), and the budget stayed a
    # disruption short for two minutes. The answer, whatever it is, ends the request; nobody is left to raise to.
    transport = _Held(error)
    client = PodClient(transport)
    evicting = asyncio.create_task(client.evict(a_pod(), None))
    async with asyncio.timeout(5):
        while not transport.calls:
            await asyncio.sleep(0)
    evicting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await evicting
    transport.release.set()
    async with asyncio.timeout(5):
        while not transport.ended:
            await asyncio.sleep(0)
    assert transport.ended == ["answered"]
