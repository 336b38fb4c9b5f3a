"""PodClient.open_on_node: pods and the watch in one request (watch-list), or a list where the server refuses it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, cast

from spotq.errors import ApiError
from spotq.kube.client import KubeClient
from spotq.kube.pods import PodClient

JSON = dict[str, Any]


def pod(name: str, version: str) -> JSON:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": version},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }


def initial_end(version: str) -> JSON:
    annotations = {"k8s.io/initial-events-end": "true"}
    return {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": version, "annotations": annotations}}}


@dataclass
class FakeKube:
    """Answers watches from a script; a refused watch-list raises as the API server's 422 would."""

    streams: list[list[JSON]] = field(default_factory=list)
    refuse_watch_list: bool = False
    queries: list[dict[str, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    closed: int = 0

    async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        self.queries.append(query)
        try:
            if self.refuse_watch_list and "sendInitialEvents" in query:
                raise ApiError(422, "Unprocessable Entity", "sendInitialEvents is forbidden")
            for event in self.streams.pop(0):
                yield event
        finally:
            self.closed += 1

    async def request(self, method: str, path: str, *, query: dict[str, str], operation: str) -> JSON:
        self.requests.append(operation)
        return {"metadata": {"resourceVersion": "7"}, "items": [pod("a", "5")]}


def client(kube: FakeKube) -> PodClient:
    return PodClient(cast(KubeClient, kube))


async def test_watch_list_gives_the_pods_and_then_the_live_watch_from_one_request() -> None:
    later = {"type": "DELETED", "object": pod("a", "9")}
    kube = FakeKube(streams=[[{"type": "ADDED", "object": pod("a", "5")}, initial_end("8"), later]])
    pods, version, live = await client(kube).open_on_node("n1")
    assert [p.name for p in pods] == ["a"] and version == "8"
    assert kube.queries[0]["sendInitialEvents"] == "true"
    assert kube.queries[0]["resourceVersionMatch"] == "NotOlderThan"
    assert live is not None
    events = [(kind, p.name if p else None, rv) async for kind, p, rv in live]
    assert events == [("DELETED", "a", "9")]
    assert kube.requests == [] and kube.closed == 1


async def test_a_server_without_watch_list_gets_a_list_and_is_not_asked_again() -> None:
    kube = FakeKube(refuse_watch_list=True)
    pods_client = client(kube)
    for _ in range(2):
        pods, version, live = await pods_client.open_on_node("n1")
        assert [p.name for p in pods] == ["a"] and version == "7" and live is None
    assert kube.requests == ["list_pods", "list_pods"]
    assert len(kube.queries) == 1  # the refusal is remembered


async def test_a_watch_that_ends_before_the_initial_state_falls_back_to_a_list() -> None:
    kube = FakeKube(streams=[[{"type": "ADDED", "object": pod("a", "5")}]])
    pods, version, live = await client(kube).open_on_node("n1")
    assert [p.name for p in pods] == ["a"] and version == "7" and live is None
    assert kube.requests == ["list_pods"] and kube.closed == 1


async def test_other_errors_are_raised_not_mistaken_for_a_missing_feature() -> None:
    @dataclass
    class Broken(FakeKube):
        async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
            raise ApiError(500, "Internal Server Error", "etcd down")
            yield {}  # an async generator, as the real one

    kube = Broken()
    pods_client = client(kube)
    try:
        await pods_client.open_on_node("n1")
    except ApiError as exc:
        assert exc.status == 500
    else:
        raise AssertionError("a 500 must not pass as an empty node")
    assert kube.requests == []
