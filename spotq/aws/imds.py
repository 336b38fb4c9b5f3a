"""The instance metadata service (IMDS) over HTTP: IMDSv2 session tokens, short timeouts, jittered retries.

IMDS mode's only AWS edge. It answers "what does this path hold now" (a body, or None for 404) and raises
`ImdsError` naming why it could not; what the bodies mean is `imds_mode`'s business.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

import spotq.clock
from spotq import backoff
from spotq.errors import ImdsError
from spotq.observability import metrics

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"

# What an operator must change when the token PUT never answers inside a pod.
HOP_LIMIT_HINT = (
    "from a pod, IMDSv2 answers only with an instance metadata hop limit of 2 "
    "(launch template MetadataOptions.HttpPutResponseHopLimit=2) or with hostNetwork: true "
    "(helm: --set daemonset.hostNetwork=true)"
)

# Back-off between retries of one request: doubling from 0.1 s, at most 1 s, each drawn in [d/2, d].
_BACKOFF = backoff.Backoff(initial_seconds=0.1, max_seconds=1.0, jitter=0.5)
# Renew a token this long before it expires (a quarter of a short TTL).
_TOKEN_RENEW_MARGIN_SECONDS = 60.0
# After falling back to IMDSv1, try for a token again this often.
_V1_RETRY_TOKEN_SECONDS = 60.0


class TokenTimeoutError(ImdsError):
    """The token PUT got no answer: almost always the hop limit (a pod's extra hop), or a host without IMDS."""


@dataclass(frozen=True)
class ImdsConfig:
    endpoint: str = "http://169.254.169.254"
    token_ttl_seconds: int = 21600
    request_timeout_seconds: float = 1.0
    retries: int = 2
    imdsv1_fallback: bool = False


class ImdsClient:
    """Reads IMDS paths with an IMDSv2 session token, renewed before it expires and replaced on a 401."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: ImdsConfig,
        *,
        clock: Callable[[], float] = spotq.clock.loop_now,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._config = config
        self._base = config.endpoint.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=config.request_timeout_seconds)
        self._clock = clock
        self._rng = rng or random.Random()
        self._token: str | None = None
        self._renew_at = 0.0
        self._v1_until = 0.0  # while the clock is below this, read without a token (fallback engaged)
        self._lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        return self._base

    async def get(self, path: str) -> str | None:
        """The body at `path`, or None when IMDS says 404 (nothing there now). Raises ImdsError after retries."""
        attempt = 0
        while True:
            try:
                return await self._get_once(path)
            except ImdsError as exc:
                if not exc.retryable or attempt >= self._config.retries:
                    raise
                log.debug("imds request failed, retrying", extra={"path": path, "error": str(exc)})
            attempt += 1
            await asyncio.sleep(_BACKOFF.seconds(attempt, rng=self._rng))

    def forget_token(self) -> None:
        self._token = None
        self._renew_at = 0.0

    async def _get_once(self, path: str) -> str | None:
        token = await self._current_token()
        status, body = await self._send("GET", path, token)
        if status == 401 and token is not None:
            # The token expired early or IMDS forgot it (restart): one fresh token, then the answer stands.
            self.forget_token()
            token = await self._current_token()
            status, body = await self._send("GET", path, token)
        if status == 200:
            return body
        if status == 404:
            return None
        if status == 401:
            hint = " (IMDS requires IMDSv2 and no token could be had)" if token is None else ""
            raise ImdsError(f"GET {path}: 401 Unauthorized{hint}", reason="unauthorized")
        # 429 is IMDS throttling and 5xx its own trouble: both pass; other 4xx (403: IMDS disabled) will not.
        retryable = status == 429 or status >= 500
        raise ImdsError(f"GET {path}: HTTP {status}: {body[:200]}", reason="http_error", retryable=retryable)

    async def _current_token(self) -> str | None:
        now = self._clock()
        if self._token is not None and now < self._renew_at:
            return self._token
        if now < self._v1_until:
            return None
        async with self._lock:  # concurrent reads share one PUT
            now = self._clock()
            if self._token is not None and now < self._renew_at:
                return self._token
            return await self._fetch_token()

    async def _fetch_token(self) -> str | None:
        ttl = self._config.token_ttl_seconds
        try:
            status, body = await self._send("PUT", TOKEN_PATH, None, {TOKEN_TTL_HEADER: str(ttl)})
        except ImdsError as exc:
            if exc.reason != "timeout":
                metrics.IMDS_TOKEN_REQUESTS.labels(result="unreachable").inc()
                raise
            metrics.IMDS_TOKEN_REQUESTS.labels(result="timeout").inc()
            if self._fall_back("token request timed out"):
                return None
            raise TokenTimeoutError(
                f"IMDS token request (PUT {self._base}{TOKEN_PATH}) timed out after "
                f"{self._config.request_timeout_seconds:g}s: {HOP_LIMIT_HINT}",
                reason="token_timeout",
            ) from None
        if status == 200 and body.strip():
            metrics.IMDS_TOKEN_REQUESTS.labels(result="ok").inc()
            self._token = body.strip()
            self._renew_at = self._clock() + ttl - min(_TOKEN_RENEW_MARGIN_SECONDS, ttl / 4)
            return self._token
        metrics.IMDS_TOKEN_REQUESTS.labels(result="refused").inc()
        if status != 200 and status < 500 and self._fall_back(f"token request refused with HTTP {status}"):
            return None
        raise ImdsError(
            f"IMDS token request (PUT {self._base}{TOKEN_PATH}) refused: HTTP {status}: {body[:200]}",
            reason="token_refused",
            retryable=status >= 500 or status == 429,
        )

    def _fall_back(self, why: str) -> bool:
        if not self._config.imdsv1_fallback:
            return False
        log.debug("imds: reading without a token (IMDSv1 fallback)", extra={"why": why})
        self._v1_until = self._clock() + _V1_RETRY_TOKEN_SECONDS
        return True

    async def _send(
        self, method: str, path: str, token: str | None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        sent = dict(headers or {})
        if token is not None:
            sent[TOKEN_HEADER] = token
        try:
            async with self._session.request(
                method, self._base + path, headers=sent, timeout=self._timeout, allow_redirects=False
            ) as response:
                return response.status, await response.text()
        except TimeoutError:
            raise ImdsError(
                f"{method} {self._base}{path}: no answer within {self._config.request_timeout_seconds:g}s",
                reason="timeout",
            ) from None
        except aiohttp.ClientError as exc:
            raise ImdsError(
                f"{method} {self._base}{path}: IMDS not reachable: {type(exc).__name__}: {exc}", reason="unreachable"
            ) from None
