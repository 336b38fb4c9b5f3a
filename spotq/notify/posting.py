"""One POST to the webhook over aiohttp, through the proxy if one is set, answered as a sender.Answer.

The URL (its path and query carry the token of a Slack or Teams webhook) and the proxy's credentials are never put
in an answer's detail: it says a status, a timeout or the kind of connection error, and a scrubber takes out any
form of the URL an exception's text might still hold. Redirects are not followed (a POST must not turn into a GET
elsewhere).
"""

from __future__ import annotations

import base64
from types import TracebackType
from typing import Self

import aiohttp
from yarl import URL

from spotq.notify.config import WebhookConfig
from spotq.notify.sender import Answer

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_LIMIT = 30.0
"""A Retry-After longer than this is cut to it: one receiver must not hold every notification behind it for long."""
_ANSWER_BYTES = 64 * 1024


def _retry_after(value: str | None) -> float | None:
    try:
        return min(RETRY_AFTER_LIMIT, max(0.0, float(value))) if value else None
    except ValueError:
        return None  # an HTTP date: the back-off decides


class WebhookPoster:
    """Posts bodies with one session, opened by `async with` and closed after it."""

    def __init__(self, config: WebhookConfig) -> None:
        self._url = URL(config.url)
        self._headers = {"Content-Type": "application/json", "User-Agent": "spotq", **config.headers}
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        proxy = URL(config.proxy) if config.proxy else None
        self._proxy = proxy.with_user(None) if proxy is not None else None
        self._proxy_headers: dict[str, str] = {}
        if proxy is not None and proxy.user:
            credentials = base64.b64encode(f"{proxy.user}:{proxy.password or ''}".encode()).decode()
            if self._url.scheme == "https":  # on the CONNECT only: the webhook behind the tunnel never sees it
                self._proxy_headers["Proxy-Authorization"] = f"Basic {credentials}"
            else:  # plain HTTP: the request itself goes to the proxy
                self._headers["Proxy-Authorization"] = f"Basic {credentials}"
        # Every form of the URL an error's text could hold; a bare "/" path is no secret.
        forms = {config.url, str(self._url), self._url.path_qs, self._url.raw_path_qs, config.proxy or ""}
        if proxy is not None and proxy.password:
            forms.add(proxy.password)
        self._secrets = sorted((f for f in forms if len(f) > 1), key=len, reverse=True)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        # trust_env=False: HTTP(S)_PROXY are not read; the proxy is SPOTQ_WEBHOOK__PROXY or none.
        self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<webhook>")
        return " ".join(text.split())[:200]

    async def __call__(self, body: bytes) -> Answer:
        assert self._session is not None, "use WebhookPoster in `async with`"
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=self._headers,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers or None,
                allow_redirects=False,
            ) as response:
                await response.content.read(_ANSWER_BYTES)
                status = response.status
                if 200 <= status < 300:
                    return Answer(ok=True, detail=f"HTTP {status}")
                return Answer(
                    ok=False,
                    retryable=status in RETRYABLE_STATUS,
                    detail=f"HTTP {status}",
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return Answer(ok=False, retryable=True, detail=f"timeout after {self._timeout.total:g}s")
        except aiohttp.ClientHttpProxyError as exc:  # its str() names the webhook's URL: use the status only
            return Answer(ok=False, retryable=exc.status >= 500, detail=f"proxy answered HTTP {exc.status}")
        except aiohttp.ClientProxyConnectionError as exc:
            return Answer(ok=False, retryable=True, detail=self._scrub(f"proxy unreachable: {exc.os_error}"))
        except aiohttp.ClientConnectorError as exc:
            return Answer(ok=False, retryable=True, detail=self._scrub(f"cannot connect: {exc.os_error}"))
        except aiohttp.ClientResponseError as exc:  # its str() names the URL
            return Answer(ok=False, retryable=True, detail=f"{type(exc).__name__} {exc.status}")
        except (aiohttp.ClientError, OSError) as exc:
            return Answer(ok=False, retryable=True, detail=self._scrub(f"{type(exc).__name__}: {exc}"))
