"""KubeClient: against a local HTTP server that breaks its watch streams (a JSON line cut short, a line longer than
the read buffer: the node index and a drain's pod watch relist and keep serving), and over the
fake transport for its API Priority and Fairness retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from spotq import selectors
from spotq.errors import ApiError
from spotq.kube import watching
from spotq.kube.client import KubeClient
from spotq.kube.nodes import NodeIndex
from spotq.kube.pods import PodClient
from spotq.observability import metrics
from spotq.settings import KubeSettings
from tests.unit.fake_transport import FakeTransport

JSON = dict[str, Any]
# Longer than the 4 MiB a line may take in the client's read buffer (twice its 2 MiB read_bufsize).
OVER_LONG = 5 * 1024 * 1024


def node(name: str, version: str) -> JSON:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version},
        "spec": {"providerID": f"aws:///us-east-1a/i-{abs(hash(name)) % 10**8:08x}"},
    }


def line(event: JSON) -> bytes:
    return json.dumps(event).encode() + b"\n"


TRUNCATED = b'{"type": "ADDED", "object": {"metadata": {"name": "cut'  # the connection ends mid-object
TOO_LONG = b'{"type": "ADDED", "object": {"metadata": {"name": "big", "x": "' + b"a" * OVER_LONG + b'"}}}\n'


@dataclass
class BrokenStreams:
    """A tiny API server: lists of /api/v1/nodes and /api/v1/pods grow by one item each time; watches follow the
    scripts in order (bytes written as they are), and once the scripts are used up stay open and quiet."""

    watches: list[list[bytes]]
    lists: dict[str, int] = field(default_factory=dict)
    watch_paths: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.path.rsplit("/", 1)[-1]
        if request.query.get("watch") != "true":
            count = self.lists[kind] = self.lists.get(kind, 0) + 1
            items = [node(f"listed-{i}", str(i)) for i in range(1, count + 1)] if kind == "nodes" else []
            return web.json_response({"metadata": {"resourceVersion": str(count)}, "items": items})
        self.watch_paths.append(kind)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if not self.watches:
            await asyncio.Event().wait()  # a quiet watch, until the client goes away
        for chunk in self.watches.pop(0):
            await response.write(chunk)
        await response.write_eof()
        return response


Serve = Callable[[BrokenStreams], Awaitable[KubeClient]]


@pytest_asyncio.fixture(loop_scope="function")
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []
    clients: list[KubeClient] = []

    async def start(server: BrokenStreams) -> KubeClient:
        app = web.Application()
        app.router.add_get("/api/v1/{kind}", server.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "local", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "local", "context": {"cluster": "local", "user": "u"}}],
                    "current-context": "local",
                }
            )
        )
        client = await KubeClient.connect(KubeSettings(kubeconfig=str(kubeconfig)), max_connections=4)
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


async def test_the_node_index_relists_after_a_cut_line_and_an_over_long_line_and_keeps_serving(serve: Serve) -> None:
    server = BrokenStreams(
        watches=[
            [line({"type": "ADDED", "object": node("watched", "2")}), TRUNCATED],
            [TOO_LONG],
            [line({"type": "ADDED", "object": node("late", "9")}), b""],
        ]
    )
    client = await serve(server)
    index = NodeIndex(selectors.parse(""))
    run = asyncio.create_task(index.run(client, backoff=watching.Backoff(initial_seconds=0.01)))
    late = asyncio.create_task(index.wait_for(lambda: index.by_name("late") is not None))
    try:
        done, _ = await asyncio.wait([run, late], timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if run in done:
            raise AssertionError("the node index stopped") from run.exception()
        assert late in done, "the index never got past the broken streams"
        # Each broken stream cost a relist (3 lists), and the index serves the third list and the last watch.
        assert server.lists["nodes"] == 3
        assert all(index.by_name(name) is not None for name in ("listed-1", "listed-2", "listed-3", "late"))
        assert index.by_name("big") is None and index.by_name("cut") is None
    finally:
        run.cancel()
        late.cancel()
        await asyncio.gather(run, late, return_exceptions=True)


@pytest.mark.parametrize("broken", [TRUNCATED, TOO_LONG], ids=["cut-line", "over-long-line"])
async def test_a_broken_pod_watch_stream_is_survived_by_the_drains_pod_watch_which_relists(
    serve: Serve, broken: bytes
) -> None:
    pod = {"metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "6"}, "spec": {}}
    server = BrokenStreams(watches=[[line({"type": "ADDED", "object": pod}), broken]])
    client = await serve(server)
    seen: list[str] = []
    relisted = asyncio.Event()

    def listed(pods: list[object]) -> None:
        seen.append("list")
        if seen.count("list") == 2:
            relisted.set()

    pods = PodClient(client, watch_list=False, backoff=watching.Backoff(initial_seconds=0.01))
    follow = asyncio.create_task(pods.follow_node("n1", listed, lambda kind, pod: seen.append(f"{kind} {pod.name}")))
    try:
        async with asyncio.timeout(20):
            await relisted.wait()
        assert not follow.done(), "the pod watch must not end on a broken stream"
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
    assert seen == ["list", "ADDED a", "list"] and server.lists["pods"] == 2


def sample(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def throttled(body: str = "") -> ApiError:
    return ApiError(429, "Too Many Requests", body, retry_after=0.0)


async def test_the_api_servers_throttling_is_retried_after_retry_after_and_counted() -> None:
    transport = FakeTransport(answers={"get_node": [throttled(), throttled(), {"metadata": {"name": "n1"}}]})
    client = KubeClient(transport, KubeSettings())
    errors = sample("spotq_api_errors_total", {"api": "kubernetes", "operation": "get_node"})
    sent = sample("spotq_kube_requests_total", {"operation": "get_node"})
    node = await client.request("GET", "/api/v1/nodes/n1", operation="get_node")
    assert node == {"metadata": {"name": "n1"}} and transport.operations() == ["get_node"] * 3
    assert sample("spotq_api_errors_total", {"api": "kubernetes", "operation": "get_node"}) - errors == 2
    assert sample("spotq_kube_requests_total", {"operation": "get_node"}) - sent == 3


async def test_a_pdb_refusal_is_not_retried_here_and_throttling_gives_up_after_a_few_tries() -> None:
    refusal = throttled("Cannot evict pod as it would violate the pod's disruption budget.")
    transport = FakeTransport(answers={"evict_pod": [refusal], "get_node": [throttled() for _ in range(10)]})
    client = KubeClient(transport, KubeSettings())
    with pytest.raises(ApiError) as refused:
        await client.request("POST", "/api/v1/namespaces/ns/pods/a/eviction", body={}, operation="evict_pod")
    assert refused.value is refusal and transport.operations() == ["evict_pod"]
    with pytest.raises(ApiError, match="429"):
        await client.request("GET", "/api/v1/nodes/n1", operation="get_node")
    assert transport.operations().count("get_node") == 6
