"""PodClient.open_on_node: pods and the watch in one request (watch-list), or a list where the server refuses it."""

from __future__ import annotations

from typing import Any

import pytest

from spotq.errors import ApiError, TransientError
from spotq.kube.pods import PodClient
from spotq.kube.transport import WatchStreamError
from tests.unit.fake_transport import FakeTransport

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


def listed() -> JSON:
    return {"metadata": {"resourceVersion": "7"}, "items": [pod("a", "5")]}


REFUSED = ApiError(422, "Unprocessable Entity", "sendInitialEvents is forbidden")  # a server without watch-list


def client(transport: FakeTransport) -> PodClient:
    return PodClient(transport)


async def test_watch_list_gives_the_pods_and_then_the_live_watch_from_one_request() -> None:
    later = {"type": "DELETED", "object": pod("a", "9")}
    kube = FakeTransport(
        streams={"watch_list_pods": [[{"type": "ADDED", "object": pod("a", "5")}, initial_end("8"), later]]}
    )
    pods, version, live = await client(kube).open_on_node("n1")
    assert [p.name for p in pods] == ["a"] and version == "8"
    assert kube.calls[0].query["sendInitialEvents"] == "true"
    assert kube.calls[0].query["resourceVersionMatch"] == "NotOlderThan"
    assert live is not None
    events = [(kind, p.name if p else None, rv) async for kind, p, rv in live]
    assert events == [("DELETED", "a", "9")]
    assert kube.operations() == ["watch_list_pods"] and kube.watches_closed == 1


async def test_a_server_without_watch_list_gets_a_list_and_is_not_asked_again() -> None:
    kube = FakeTransport(answers={"list_pods": [listed(), listed()]}, streams={"watch_list_pods": [[REFUSED]]})
    pods_client = client(kube)
    for _ in range(2):
        pods, version, live = await pods_client.open_on_node("n1")
        assert [p.name for p in pods] == ["a"] and version == "7" and live is None
    assert kube.operations() == ["watch_list_pods", "list_pods", "list_pods"]  # the refusal is remembered


async def test_a_watch_that_ends_before_the_initial_state_falls_back_to_a_list() -> None:
    kube = FakeTransport(
        answers={"list_pods": [listed()]}, streams={"watch_list_pods": [[{"type": "ADDED", "object": pod("a", "5")}]]}
    )
    pods, version, live = await client(kube).open_on_node("n1")
    assert [p.name for p in pods] == ["a"] and version == "7" and live is None
    assert kube.operations() == ["watch_list_pods", "list_pods"] and kube.watches_closed == 1


@pytest.mark.parametrize(
    "failure",
    [ApiError(500, "Internal Server Error", "etcd down"), WatchStreamError("watch_list_pods: watch line is not JSON")],
    ids=["http-500", "cut-line"],
)
async def test_other_errors_are_raised_not_mistaken_for_a_missing_feature(failure: TransientError) -> None:
    kube = FakeTransport(streams={"watch_list_pods": [[{"type": "ADDED", "object": pod("a", "5")}, failure]]})
    with pytest.raises(TransientError) as raised:
        await client(kube).open_on_node("n1")
    assert raised.value is failure, "a failure must not pass as an empty node"
    assert kube.operations() == ["watch_list_pods"] and kube.watches_closed == 1


async def test_a_broken_live_watch_is_a_transient_error_for_the_drains_watcher_to_restart() -> None:
    cut = WatchStreamError("watch_pods: watch line is not JSON")
    kube = FakeTransport(streams={"watch_pods": [[{"type": "MODIFIED", "object": pod("a", "6")}, cut]]})
    seen: list[str] = []
    with pytest.raises(TransientError):
        async for kind, _, version in client(kube).watch_on_node("n1", "5"):
            seen.append(f"{kind}@{version}")
    assert seen == ["MODIFIED@6"] and kube.calls[0].query["resourceVersion"] == "5" and kube.watches_closed == 1
