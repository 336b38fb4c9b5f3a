"""A lean Kubernetes JSON client: kubernetes_asyncio loads the config and TLS, we speak raw JSON.

Raw JSON avoids building model objects for every node and pod (the hot path at 1000 nodes), and one client with
one rate limiter is shared by everything spotq does; when it must wait, taints go before drains and drains before
Events (see ratelimit.Priority).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import json
import os
import random
import urllib.request
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from spotq.errors import ApiError, ConfigError, TransientError
from spotq.observability import metrics
from spotq.ratelimit import Priority, TokenBucket
from spotq.settings import KubeSettings
from spotq.slots import DeadlineSlots

JSON = dict[str, Any]

# Retries of a request that API Priority and Fairness turned away (429 with Retry-After, usually 1 s).
_THROTTLE_RETRIES = 5
# asyncio gives every TLS connection a zero-filled 256 KiB read buffer. A drain holds a pod watch (a connection)
# for each of up to drain.max_concurrent_nodes nodes, so in a wave those buffers alone were ~150 MB of RSS. A TLS
# record is at most 16 KiB: 64 KiB still reads four at a time.
_TLS_READ_BUFFER = 64 * 1024


def _shrink_tls_read_buffers() -> None:
    current = getattr(asyncio.sslproto.SSLProtocol, "max_size", None)
    if isinstance(current, int) and current > _TLS_READ_BUFFER:
        asyncio.sslproto.SSLProtocol.max_size = _TLS_READ_BUFFER


class KubeClient:
    def __init__(self, api: Any, settings: KubeSettings) -> None:
        self._api = api
        self._host: str = api.configuration.host
        # Our own session on kubernetes_asyncio's connector (its TLS settings and pool): that session trusts the
        # environment, which costs a thread-pool hop and a ~/.netrc lookup on every request. The proxy, if
        # any, is decided once here instead.
        self._session = aiohttp.ClientSession(
            connector=api.rest_client.pool_manager.connector, connector_owner=False, read_bufsize=2**21
        )
        self._proxy = _proxy_for(self._host, api.configuration.proxy)
        self._bucket = TokenBucket(settings.qps, settings.burst)
        # Lower key first: a taint waiting for a connection goes before evictions and Events waiting too.
        self._in_flight = DeadlineSlots(settings.max_in_flight)
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout_seconds)

    @classmethod
    async def connect(cls, settings: KubeSettings, *, max_connections: int) -> KubeClient:
        configuration = k8s_client.Configuration()
        try:
            if settings.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                await k8s_config.load_kube_config(
                    config_file=settings.kubeconfig,
                    context=settings.context,
                    client_configuration=configuration,
                )
        except Exception as exc:
            raise ConfigError(f"invalid setting SPOTQ_KUBE__KUBECONFIG: cannot load Kubernetes config: {exc}") from None
        # Watches hold a connection each; leave room for them beside ordinary requests.
        configuration.connection_pool_maxsize = max_connections
        _shrink_tls_read_buffers()
        return cls(k8s_client.ApiClient(configuration), settings)

    async def close(self) -> None:
        await self._session.close()
        await self._api.close()

    async def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        await self._api.update_params_for_auth(headers, [], ["BearerToken"])
        return headers

    def _url(self, path: str, query: dict[str, str] | None) -> str:
        return self._host + path + ("?" + urlencode(query) if query else "")

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: JSON | None = None,
        content_type: str = "application/json",
        operation: str,
        priority: Priority = Priority.WORK,
    ) -> JSON:
        """One API call; non-2xx raises ApiError (status kept), network trouble TransientError.

        A 429 from API Priority and Fairness (the server is busy, not a PDB refusal) is retried after the
        Retry-After it names, a few times: under a mass interruption that is the server pacing us, not a failure.
        """
        data = json.dumps(body) if body is not None else None
        for attempt in range(_THROTTLE_RETRIES + 1):
            try:
                return await self._request_once(method, path, query, data, content_type, operation, priority)
            except ApiError as exc:
                if exc.status != 429 or "disruption budget" in exc.body or attempt == _THROTTLE_RETRIES:
                    raise
                metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
                delay = exc.retry_after if exc.retry_after is not None else 1.0
                await asyncio.sleep(random.uniform(delay, delay * 1.5))
        raise AssertionError("unreachable")

    async def _request_once(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        data: str | None,
        content_type: str,
        operation: str,
        priority: Priority,
    ) -> JSON:
        async with self._in_flight.hold(float(priority)):
            await self._bucket.acquire(priority)
            return await self._exchange(method, path, query, data, content_type, operation)

    async def _exchange(
        self, method: str, path: str, query: dict[str, str] | None, data: str | None, content_type: str, operation: str
    ) -> JSON:
        metrics.KUBE_REQUESTS.labels(operation=operation).inc()
        try:
            async with self._session.request(
                method,
                self._url(path, query),
                data=data,
                headers=await self._headers(content_type),
                timeout=self._timeout,
                proxy=self._proxy,
            ) as response:
                text = await response.text()
                if response.status >= 300:
                    if response.status != 429:
                        metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
                    raise ApiError(response.status, response.reason or "", text, _retry_after(response))
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
            raise TransientError(f"{operation}: {type(exc).__name__}: {exc}") from exc

    async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        """Yield watch events ({type, object}) until the server ends the watch."""
        await self._bucket.acquire()
        metrics.KUBE_REQUESTS.labels(operation=operation).inc()
        params = {**query, "watch": "true", "allowWatchBookmarks": "true"}
        try:
            async with self._session.get(
                self._url(path, params),
                headers=await self._headers("application/json"),
                proxy=self._proxy,
                # The server ends a watch after timeoutSeconds and sends bookmarks meanwhile: a read silent for
                # longer than that means a dead connection, which must not stall the index forever.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=10, sock_read=int(query.get("timeoutSeconds", "300")) + 60
                ),
            ) as response:
                if response.status >= 300:
                    metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
                    raise ApiError(response.status, response.reason or "", await response.text())
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError) as exc:
            metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
            raise TransientError(f"{operation}: {type(exc).__name__}: {exc}") from exc


def _proxy_for(host: str, configured: str | None) -> str | None:
    """The kubeconfig's proxy-url, else HTTPS_PROXY/HTTP_PROXY unless NO_PROXY covers the API server."""
    if configured:
        return configured
    parts = urlsplit(host)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def sleep_backoff(attempt: int, initial: float, maximum: float) -> None:
    await asyncio.sleep(min(maximum, initial * (2**attempt)))
