"""spotq's bearer token, read again when the API server refuses it (401) instead of never.

A token ends: a projected ServiceAccount token expires or its bound object goes, an exec plugin's (aws eks
get-token) lasts 15 minutes, an operator rotates a kubeconfig. kubernetes_asyncio reads a kubeconfig's token once
and the in-cluster token file at most once a minute, so a refused token kept spotq deaf for that long or for good.
Here a 401 reads the source again (the in-cluster token file, or the kubeconfig and its exec plugin) at most once
a second, and the request that was refused is sent once more when a different token came back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from spotq.observability import metrics

log = logging.getLogger(__name__)

KEY = "BearerToken"
# The in-cluster token file (kubelet rewrites it well before the token expires).
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# How often the in-cluster token file is read without a refusal, s (as kubernetes_asyncio's own hook does).
TOKEN_FILE_EVERY_SECONDS = 60.0
# A burst of refused requests reads the source once.
MIN_RELOAD_SECONDS = 1.0

Reader = Callable[[], Awaitable[str | None]]


class Credentials:
    """The token in `configuration.api_key[KEY]` ('Bearer ...'), and the way to read it again."""

    def __init__(
        self,
        configuration: Any,
        read: Reader,
        *,
        min_reload_seconds: float = MIN_RELOAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configuration = configuration
        self._read = read
        self._min_reload = min_reload_seconds
        self._clock = clock
        self._last_reload = -float("inf")
        self._lock = asyncio.Lock()

    def current(self) -> str | None:
        token = self._configuration.api_key.get(KEY)
        return str(token) if token else None

    async def after_refusal(self, refused: str | None) -> bool:
        """A request sent with `refused` got 401. True when another token is now in place: send it again."""
        async with self._lock:
            if self.current() != refused:
                return True  # another refused request read the source meanwhile
            if self._clock() - self._last_reload < self._min_reload:
                return False
            self._last_reload = self._clock()
            try:
                token = await self._read()
            except Exception as exc:  # a kubeconfig being rewritten, an exec plugin failing: try at the next 401
                metrics.KUBE_CREDENTIAL_RELOADS.labels(result="failed").inc()
                log.warning("cannot read the Kubernetes credentials again: %s", exc, extra={"error": str(exc)})
                return False
            if not token or token == refused:
                metrics.KUBE_CREDENTIAL_RELOADS.labels(result="unchanged").inc()
                log.warning("the API server refused spotq's token (401) and its source holds no other")
                return False
            self._configuration.api_key[KEY] = token
            metrics.KUBE_CREDENTIAL_RELOADS.labels(result="changed").inc()
            log.info("the API server refused spotq's token (401): read a new one from its source")
            return True


def in_cluster(configuration: Any, path: Path = IN_CLUSTER_TOKEN) -> Credentials:
    """The in-cluster token file: read every TOKEN_FILE_EVERY_SECONDS and at once after a refusal. Replaces
    kubernetes_asyncio's hook, which would put its cached token back for up to a minute."""
    next_read = [time.monotonic() + TOKEN_FILE_EVERY_SECONDS]

    def read_now() -> str | None:
        text = path.read_text().strip()
        return f"Bearer {text}" if text else None

    def hook(config: Any) -> None:
        if time.monotonic() < next_read[0]:
            return
        next_read[0] = time.monotonic() + TOKEN_FILE_EVERY_SECONDS
        try:
            token = read_now()
        except OSError:
            return  # keep the token we have; a refusal will say so
        if token:
            config.api_key[KEY] = token

    async def read() -> str | None:
        next_read[0] = time.monotonic() + TOKEN_FILE_EVERY_SECONDS
        return await asyncio.to_thread(read_now)

    configuration.refresh_api_key_hook = hook
    return Credentials(configuration, read)


def from_kubeconfig(configuration: Any, config_file: str | None, context: str | None) -> Credentials:
    """The kubeconfig, loaded again (its exec plugin run again) after a refusal; only the token is taken."""

    async def read() -> str | None:
        fresh = k8s_client.Configuration()
        await k8s_config.load_kube_config(
            config_file=config_file, context=context, client_configuration=fresh, persist_config=False
        )
        token = fresh.api_key.get(KEY)
        return str(token) if token else None

    return Credentials(configuration, read)
