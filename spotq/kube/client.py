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

from spotq.errors import ApiError, ConfigError, TransientError
from spotq.kube import credentials
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
        tokens: credentials.Credentials | None = None,
    ) -> None:
        self._transport = transport
        self._close = close
        self._tokens = tokens
        # Set while the API server answers; cleared by a request it could not answer (no connection, 5xx), set
        # again by the next answer: watches waiting out a back-off start over at once (watching.Backoff.pause).
        self.answering = asyncio.Event()
        self.answering.set()
        self._bucket = TokenBucket(settings.qps, settings.burst)
        # Lower key first: a taint waiting for a connection goes before evictions and Events waiting too.
        self._in_flight = DeadlineSlots(settings.max_in_flight)
        self.requests_sent = 0  # every request sent (not watches): kube/warming.py sees the traffic

    @classmethod
    async def connect(cls, settings: KubeSettings, *, max_connections: int) -> KubeClient:
        configuration = k8s_client.Configuration()
        try:
            if settings.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s_config.load_incluster_config(client_configuration=configuration)
                tokens = credentials.in_cluster(configuration)
            else:
                await k8s_config.load_kube_config(
                    config_file=settings.kubeconfig,
                    context=settings.context,
                    client_configuration=configuration,
                )
                tokens = credentials.from_kubeconfig(configuration, settings.kubeconfig, settings.context)
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

        return cls(http, settings, close=close, tokens=tokens)

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
        A 401 (the token expired or was revoked) reads the credentials again (kube/credentials.py) and, when they
        changed, sends the request once more: an unauthenticated request did nothing.
        """
        call = (method, path, query, body, content_type, operation, priority)
        sent_with = self._tokens.current() if self._tokens is not None else None
        try:
            return await self._paced(*call)
        except ApiError as exc:
            if exc.status != 401 or self._tokens is None or not await self._tokens.after_refusal(sent_with):
                raise
        return await self._paced(*call)

    async def _paced(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: JSON | None,
        content_type: str,
        operation: str,
        priority: Priority,
    ) -> JSON:
        for attempt in range(_THROTTLE_RETRIES + 1):
            try:
                async with self._in_flight.hold(float(priority)):
                    await self._bucket.acquire(priority)
                    metrics.KUBE_REQUESTS.labels(operation=operation).inc()
                    self.requests_sent += 1
                    answer = await self._transport.request(
                        method,
                        path,
                        query=query,
                        body=body,
                        content_type=content_type,
                        operation=operation,
                        priority=priority,
                    )
                self.answering.set()
                return answer
            except ApiError as exc:  # (before TransientError: an ApiError is one)
                if exc.status >= 500:
                    self.answering.clear()
                else:
                    self.answering.set()  # it answered: refusals are answers
                if exc.status != 429 or "disruption budget" in exc.body or attempt == _THROTTLE_RETRIES:
                    raise
                metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
                delay = exc.retry_after if exc.retry_after is not None else 1.0
                await asyncio.sleep(random.uniform(delay, delay * 1.5))
            except TransientError:
                self.answering.clear()
                raise
        raise AssertionError("unreachable")

    async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        """Yield watch events ({type, object}) until the server ends the watch (see transport.Transport.watch).
        A 401 reads the credentials again for the watch's next attempt, and is raised as it is."""
        await self._bucket.acquire()
        metrics.KUBE_REQUESTS.labels(operation=operation).inc()
        sent_with = self._tokens.current() if self._tokens is not None else None
        stream = self._transport.watch(path, query, operation=operation)
        try:
            async for event in stream:
                yield event
        except ApiError as exc:
            if exc.status == 401 and self._tokens is not None:
                await self._tokens.after_refusal(sent_with)
            raise
        finally:
            await stream.aclose()
