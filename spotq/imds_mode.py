"""IMDS mode (`spotq imds`): a pod on each Spot node polls that node's instance metadata and acts on its own node.

Wiring only: the polling source (spotq.polling) feeds the one handler (spotq.handling) through the shared root
(spotq.app). No AWS SDK is loaded here: IMDS is plain HTTP (aws/imds.py, aiohttp).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from spotq import app, polling
from spotq.aws.imds import ImdsClient, ImdsConfig
from spotq.ports import NodeLookup
from spotq.resolving import OwnNode
from spotq.settings import Settings


def node_name(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """SPOTQ_IMDS__NODE_NAME, else NODE_NAME (the downward API's spec.nodeName)."""
    return settings.imds.node_name or environ.get("NODE_NAME") or None


def imds_config(settings: Settings) -> ImdsConfig:
    imds = settings.imds
    return ImdsConfig(
        endpoint=imds.endpoint,
        token_ttl_seconds=imds.token_ttl_seconds,
        request_timeout_seconds=imds.request_timeout_seconds,
        retries=imds.retries,
        imdsv1_fallback=imds.imdsv1_fallback,
    )


def stale_after_seconds(settings: Settings) -> float:
    """How long IMDS may fail before the pod is unready: three polls, each with its token and read retried."""
    imds = settings.imds
    return 3 * imds.poll_interval_seconds + 2 * (imds.retries + 1) * imds.request_timeout_seconds


class ImdsSource:
    """app.Source over this node's instance metadata: the index holds this one node (a DaemonSet of 1000 must not
    watch 1000 nodes each), no PDB watch (evictions refused by a PDB are retried on a timer), no AWS SDK."""

    mode = "imds"
    watch_budgets = False

    def __init__(self, settings: Settings, node: str) -> None:
        self._settings = settings
        self._node = node
        self.index_scope = f"metadata.name={node}"
        self._session: aiohttp.ClientSession | None = None
        self._watcher: polling.Watcher | None = None
        self._index: NodeLookup | None = None

    async def open(self, stack: AsyncExitStack) -> None:
        # Never through a proxy (IMDS is link-local), and a handful of connections is plenty.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4), trust_env=False)
        stack.push_async_callback(self._session.close)

    def wire(self, core: app.Core) -> None:
        assert self._session is not None
        imds = self._settings.imds
        self._index = core.index
        self._watcher = polling.Watcher(
            imds=ImdsClient(self._session, imds_config(self._settings)),
            nodes=core.index,
            handler=core.handler(OwnNode(core.index, self._node)),
            node_name=self._node,
            interval_seconds=imds.poll_interval_seconds,
            stale_after_seconds=stale_after_seconds(self._settings),
            scheduled_maintenance=imds.watch_scheduled_maintenance,
            target_lifecycle_state=imds.watch_target_lifecycle_state,
        )

    async def ready(self) -> tuple[bool, str]:
        assert self._watcher is not None and self._index is not None
        if self._index.by_name(self._node) is None:
            return False, f"node {self._node} not in the cluster"
        if not self._watcher.reachable():
            return False, f"imds not reachable: {self._watcher.last_error or 'no answer yet'}"
        return True, "ok"

    def details(self) -> dict[str, object]:
        imds = self._settings.imds
        return {"node": self._node, "endpoint": imds.endpoint, "poll_interval_seconds": imds.poll_interval_seconds}

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return []

    async def run(self, stop: asyncio.Event) -> None:
        assert self._watcher is not None
        await self._watcher.run(stop)


async def run_imds_mode(settings: Settings, node: str, *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the process exit code."""
    return await app.run(settings, ImdsSource(settings, node), stop=stop)
