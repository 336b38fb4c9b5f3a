"""EC2 DescribeInstances for index misses and tag scoping, batched across messages."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spotq.errors import TransientError
from spotq.notices import InstanceId
from spotq.observability import metrics

log = logging.getLogger(__name__)

# DescribeInstances takes up to 200 values in one filter.
MAX_IDS = 200
# Misses arriving within this window share one call.
BATCH_WINDOW_SECONDS = 0.05


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: InstanceId
    private_dns_name: str
    tags: dict[str, str]


class InstanceLookup:
    """`describe(id)` queues a request; `run()` (owned by the app's TaskGroup) answers them in batches."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._requests: asyncio.Queue[tuple[InstanceId, asyncio.Future[InstanceInfo | None]]] = asyncio.Queue()
        self._cache: dict[InstanceId, InstanceInfo | None] = {}

    async def describe(self, instance_id: InstanceId) -> InstanceInfo | None:
        if instance_id in self._cache:
            return self._cache[instance_id]
        future: asyncio.Future[InstanceInfo | None] = asyncio.get_running_loop().create_future()
        await self._requests.put((instance_id, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self._requests.get()]
            await asyncio.sleep(BATCH_WINDOW_SECONDS)  # let concurrent misses join this call
            while not self._requests.empty() and len(batch) < MAX_IDS:
                batch.append(self._requests.get_nowait())
            await self._answer(batch)

    async def _answer(self, batch: list[tuple[InstanceId, asyncio.Future[InstanceInfo | None]]]) -> None:
        try:
            found = await self._call(sorted({instance_id for instance_id, _ in batch}))
        except TransientError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for instance_id, future in batch:
            info = found.get(instance_id)
            self._cache[instance_id] = info
            if not future.done():
                future.set_result(info)

    async def _call(self, ids: list[InstanceId]) -> dict[InstanceId, InstanceInfo]:
        found: dict[InstanceId, InstanceInfo] = {}
        try:
            # A filter, not InstanceIds=: unknown ids then simply do not match instead of failing the batch.
            query: dict[str, Any] = {"Filters": [{"Name": "instance-id", "Values": ids}]}
            while True:
                page = await self._client.describe_instances(**query)
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        instance_id = InstanceId(instance["InstanceId"])
                        found[instance_id] = InstanceInfo(
                            instance_id,
                            instance.get("PrivateDnsName", ""),
                            {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])},
                        )
                if not page.get("NextToken"):
                    break
                query["NextToken"] = page["NextToken"]
        except (ClientError, BotoCoreError) as exc:
            metrics.API_ERRORS.labels(api="ec2", operation="describe_instances").inc()
            raise TransientError(f"describe_instances: {exc}") from exc
        return found
