"""The two calls every kube module makes — one JSON request, one watch stream — as a Protocol, and the one real
implementation of it over aiohttp: the only code here that touches HTTP.

client.KubeClient wraps a Transport with spotq's limits (rate, in-flight cap, APF retries) and is a Transport
itself, so the node index, the PDB watch, the node patch and KubeClient get unit tests with one fake transport.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import json
import ssl
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import http_exceptions

from spotq.errors import ApiError, TransientError
from spotq.observability import metrics
from spotq.ratelimit import Priority

JSON = dict[str, Any]

# asyncio gives every TLS connection a zero-filled 256 KiB read buffer. A drain holds a pod watch (a connection)
# for each of up to drain.max_concurrent_nodes nodes, so in a wave those buffers alone were ~150 MB of RSS. A TLS
# record is at most 16 KiB: 64 KiB still reads four at a time.
_TLS_READ_BUFFER = 64 * 1024
# aiohttp reads a watch line into at most twice this (4 MiB): well above etcd's 1.5 MiB object limit.
_READ_BUFSIZE = 2**21
# Idle connections are kept this long (aiohttp's default is 15 s): long enough for kube/warming.py's rounds to
# keep them open, shorter than the API server's own idle timeout (90 s), so spotq never sends on a connection the
# server is closing.
KEEPALIVE_SECONDS = 75.0


class Transport(Protocol):
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
        """One API call: the decoded JSON body; non-2xx raises ApiError (status kept), network trouble
        TransientError."""
        ...

    def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        """Watch events ({type, object}) until the server ends the watch; a failed or unreadable stream raises
        ApiError / TransientError (WatchStreamError for a line that cannot be decoded)."""
        ...


class WatchStreamError(TransientError):
    """A watch stream that cannot be read on: a line that is not JSON (cut short) or longer than the read buffer.
    Whoever follows the watch lists again; the message being handled, if any, is redelivered like any transient."""


def shrink_tls_read_buffers() -> None:
    current = getattr(asyncio.sslproto.SSLProtocol, "max_size", None)
    if isinstance(current, int) and current > _TLS_READ_BUFFER:
        asyncio.sslproto.SSLProtocol.max_size = _TLS_READ_BUFFER


class HttpTransport:
    """Transport over an aiohttp session; `authorize` adds credentials to a request's headers."""

    def __init__(
        self,
        host: str,
        session: aiohttp.ClientSession,
        *,
        authorize: Callable[[dict[str, str]], Awaitable[None]],
        proxy: str | None = None,
        request_timeout_seconds: float = 15.0,
    ) -> None:
        self._host = host
        self._session = session
        self._authorize = authorize
        self._proxy = proxy
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)

    @classmethod
    def over(cls, api: Any, *, request_timeout_seconds: float) -> HttpTransport:
        """With a kubernetes_asyncio ApiClient's configuration (its TLS settings, pool size) and credentials.

        Our own session: that client's session trusts the environment, which costs a thread-pool hop and a
        ~/.netrc lookup on every request. The proxy, if any, is decided once here instead. Our own connector too:
        its idle connections are kept for KEEPALIVE_SECONDS, not aiohttp's 15 s (see kube/warming.py).
        """
        configuration = api.configuration
        connector = aiohttp.TCPConnector(
            limit=configuration.connection_pool_maxsize,
            ssl=tls_context(configuration),
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        session = aiohttp.ClientSession(connector=connector, read_bufsize=_READ_BUFSIZE)

        async def authorize(headers: dict[str, str]) -> None:
            await api.update_params_for_auth(headers, [], ["BearerToken"])

        host: str = api.configuration.host
        return cls(
            host,
            session,
            authorize=authorize,
            proxy=proxy_for(host, api.configuration.proxy),
            request_timeout_seconds=request_timeout_seconds,
        )

    async def close(self) -> None:
        await self._session.close()

    async def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        await self._authorize(headers)
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
        try:
            async with self._session.request(
                method,
                self._url(path, query),
                data=json.dumps(body) if body is not None else None,
                headers=await self._headers(content_type),
                timeout=self._timeout,
                proxy=self._proxy,
            ) as response:
                text = await response.text()
                if response.status >= 300:
                    if response.status != 429:  # counted by the caller, who knows whether it retries
                        metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
                    raise ApiError(response.status, response.reason or "", text, _retry_after(response))
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
            raise TransientError(f"{operation}: {type(exc).__name__}: {exc}") from exc
        except json.JSONDecodeError as exc:
            metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
            raise TransientError(f"{operation}: response is not JSON: {exc}") from exc

    async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
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
        # A line cut short (a proxy or the server dropping the connection mid-object) and a line longer than the
        # read buffer (aiohttp raises LineTooLong, which is not a ClientError) end this stream, not the process.
        except json.JSONDecodeError as exc:
            metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
            raise WatchStreamError(f"{operation}: watch line is not JSON: {exc}") from exc
        except http_exceptions.LineTooLong as exc:
            metrics.API_ERRORS.labels(api="kubernetes", operation=operation).inc()
            raise WatchStreamError(f"{operation}: watch line longer than {2 * _READ_BUFSIZE} bytes") from exc


def tls_context(configuration: Any) -> ssl.SSLContext:
    """The TLS settings of a kubernetes_asyncio Configuration (from a kubeconfig or the in-cluster config), as
    kubernetes_asyncio's own REST client applies them: the cluster's CA, a client certificate if any, and
    insecure-skip-tls-verify."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def proxy_for(host: str, configured: str | None) -> str | None:
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
