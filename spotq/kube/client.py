"""A lean Kubernetes JSON client: kubernetes_asyncio loads the config and TLS, we speak raw JSON.

Raw JSON avoids building model objects for every node and pod (the hot path at 1000 nodes), and one client with
one rate limiter is shared by everything spotq does; when it must wait, taints go before drains and drains before
Events (see ratelimit.Priority). KubeClient is a transport.Transport over another one (HTTP, or a fake in tests).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncGenerator, Awaitable, Callable

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from spotq.errors import ApiError, ConfigError
from spotq.kube.transport import JSON, HttpTransport, Transport, shrink_tls_read_buffers
from spotq.observability import metrics
from spotq.ratelimit import Priority, TokenBucket
from spotq.settings import KubeSettings
from spotq.slots import DeadlineSlots

__all__ = ["JSON", "KubeClient"]

# Retries of a request that API Priority and Fairness turned away (429 with Retry-After, usually 1 s).
_THROTTLE_RETRIES = 5


class KubeClient:
    """Every Kubernetes call spotq makes: rate-limited, capped in flight (most urgent first), APF 429s retried."""

    def __init__(
        self,
        transport: Transport,
        settings: KubeSettings,
        *,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._transport = transport
        self._close = close
        self._bucket = TokenBucket(settings.qps, settings.burst)
        # Lower key first: a taint waiting for a connection goes before evictions and Events waiting too.
        self._in_flight = DeadlineSlots(settings.max_in_flight)

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
        shrink_tls_read_buffers()
        api = k8s_client.ApiClient(configuration)
        http = HttpTransport.over(api, request_timeout_seconds=settings.request_timeout_seconds)

        async def close() -> None:
            await http.close()
            await api.close()

        return cls(http, settings, close=close)

    async def close(self) -> None:
        if self._close is not None:
            await self._close()

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
        for attempt in range(_THROTTLE_RETRIES + 1):
            try:
                async with self._in_flight.hold(float(priority)):
                    await self._bucket.acquire(priority)
                    metrics.KUBE_REQUESTS.labels(operation=operation).inc()
                    return await self._transport.request(
                        method,
                        path,
                        query=query,
                        body=body,
                        content_type=content_type,
                        operation=operation,
                        priority=priority,
                    )
            except ApiError as exc:
                if exc.status != 429 or "disruption budget" in exc.body or attempt == _THROTTLE_RETRIES:
                    raise
                metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
                delay = exc.retry_after if exc.retry_after is not None else 1.0
                await asyncio.sleep(random.uniform(delay, delay * 1.5))
        raise AssertionError("unreachable")

    async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        """Yield watch events ({type, object}) until the server ends the watch (see transport.Transport.watch)."""
        await self._bucket.acquire()
        metrics.KUBE_REQUESTS.labels(operation=operation).inc()
        stream = self._transport.watch(path, query, operation=operation)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()
