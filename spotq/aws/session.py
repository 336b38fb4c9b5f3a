"""One aioboto3 session and client factory, honouring the endpoint override (moto, LocalStack)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
from botocore.config import Config

from spotq.settings import AwsSettings


async def open_client(stack: AsyncExitStack, service: str, settings: AwsSettings, max_pool: int = 50) -> Any:
    session = aioboto3.Session()
    config = Config(
        retries={"max_attempts": 5, "mode": "adaptive"},
        max_pool_connections=max_pool,
        connect_timeout=5,
        read_timeout=30,
    )
    return await stack.enter_async_context(
        session.client(service, region_name=settings.region, endpoint_url=settings.endpoint_url, config=config)
    )


class LazyClient:
    """A client opened on its first call: each loads its service model (EC2's alone is ~20 MB resident), and
    queue mode needs EC2 only for instances the node index does not know and Auto Scaling only for hooks.

    Forwards `await lazy.operation(**kwargs)` to the real client; it closes with `stack`.
    """

    def __init__(self, stack: AsyncExitStack, service: str, settings: AwsSettings) -> None:
        self._stack = stack
        self._service = service
        self._settings = settings
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await open_client(self._stack, self._service, self._settings)
        return self._client

    def __getattr__(self, operation: str) -> Callable[..., Awaitable[Any]]:
        async def call(**kwargs: Any) -> Any:
            client = await self.open()
            return await getattr(client, operation)(**kwargs)

        return call
