"""A refused token (401) is read again from its source: a kubeconfig rewritten under a running KubeClient (against a
local HTTP server that takes one token at a time), the in-cluster token file, and the limits on reading again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from spotq.errors import ApiError
from spotq.kube import credentials
from spotq.kube.client import KubeClient
from spotq.observability import metrics
from spotq.settings import KubeSettings


@dataclass
class OneToken:
    """An API server that accepts only `token` and records the token of every request."""

    token: str
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(given)
        if given != self.token:
            status = {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}
            return web.json_response(status, status=401)
        return web.json_response({"kind": "NodeList", "items": [], "metadata": {"resourceVersion": "1"}})


@pytest_asyncio.fixture(loop_scope="function")
async def server() -> AsyncIterator[tuple[OneToken, str]]:
    api = OneToken("token-a")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    yield api, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def write_kubeconfig(path: Path, server: str, token: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )


@dataclass
class Connected:
    api: OneToken
    url: str
    kubeconfig: Path
    client: KubeClient

    def rotate(self, token: str) -> None:
        """The old token is revoked; its source (the kubeconfig) now holds the new one."""
        self.api.token = token
        write_kubeconfig(self.kubeconfig, self.url, token)


@pytest_asyncio.fixture(loop_scope="function")
async def connected(server: tuple[OneToken, str], tmp_path: Path) -> AsyncIterator[Connected]:
    """A KubeClient connected through a kubeconfig holding the token the server takes (token-a)."""
    api, url = server
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, url, "token-a")
    client = await KubeClient.connect(KubeSettings(kubeconfig=str(kubeconfig)), max_connections=4)
    yield Connected(api, url, kubeconfig, client)
    await client.close()


def reloads(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("spotq_kube_credential_reloads_total", {"result": result}) or 0.0


async def test_a_rewritten_kubeconfig_is_read_again_after_a_401_and_the_request_succeeds(
    connected: Connected,
) -> None:
    api, client = connected.api, connected.client
    assert await client.request("GET", "/api/v1/nodes", operation="list_nodes") is not None
    connected.rotate("token-b")
    changed = reloads("changed")
    await client.request("GET", "/api/v1/nodes", operation="list_nodes")
    assert api.seen == ["token-a", "token-a", "token-b"] and reloads("changed") == changed + 1

    connected.rotate("token-c")  # many requests refused at once: one read, every one sent again
    await asyncio.sleep(credentials.MIN_RELOAD_SECONDS)
    await asyncio.gather(*(client.request("GET", "/api/v1/nodes", operation="list_nodes") for _ in range(8)))
    assert api.seen[3:].count("token-c") == 8 and reloads("changed") == changed + 2


async def test_a_source_with_no_other_token_leaves_the_401_as_it_is(connected: Connected) -> None:
    connected.api.token = "token-b"  # revoked, and the kubeconfig still holds the old one
    unchanged = reloads("unchanged")
    with pytest.raises(ApiError) as refused:
        await connected.client.request("GET", "/api/v1/nodes", operation="list_nodes")
    assert refused.value.status == 401 and connected.api.seen == ["token-a"]
    assert reloads("unchanged") == unchanged + 1


class Config:
    def __init__(self, token: str | None) -> None:
        self.api_key: dict[str, Any] = {credentials.KEY: token} if token else {}
        self.refresh_api_key_hook: Any = None


async def test_reading_again_is_limited_to_once_a_second_and_a_failed_read_is_counted() -> None:
    now = [100.0]
    tokens = iter(["Bearer b", "Bearer c"])
    reads: list[int] = []

    async def read() -> str | None:
        reads.append(1)
        return next(tokens)

    config = Config("Bearer a")
    creds = credentials.Credentials(config, read, clock=lambda: now[0])
    assert await creds.after_refusal("Bearer a") and creds.current() == "Bearer b"
    assert await creds.after_refusal("Bearer a")  # refused with the old token: the new one is already there
    assert not await creds.after_refusal("Bearer b") and len(reads) == 1  # within the second: not read again
    now[0] += 1.5
    assert await creds.after_refusal("Bearer b") and creds.current() == "Bearer c" and len(reads) == 2

    async def broken() -> str | None:
        raise OSError("kubeconfig half written")

    failed = reloads("failed")
    assert not await credentials.Credentials(Config("Bearer a"), broken).after_refusal("Bearer a")
    assert reloads("failed") == failed + 1


async def test_the_in_cluster_token_file_is_read_at_once_after_a_refusal_and_the_hook_keeps_it(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    config = Config("Bearer one")
    creds = credentials.in_cluster(config, token_file)
    token_file.write_text("two\n")
    config.refresh_api_key_hook(config)  # within its minute: the hook reads nothing
    assert creds.current() == "Bearer one"
    assert await creds.after_refusal("Bearer one") and creds.current() == "Bearer two"
    config.refresh_api_key_hook(config)  # kubernetes_asyncio's own hook would put its cached token back here
    assert creds.current() == "Bearer two"
