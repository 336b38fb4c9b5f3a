"""One aioboto3 session and client factory, honouring the endpoint override (moto, LocalStack)."""

from __future__ import annotations

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
