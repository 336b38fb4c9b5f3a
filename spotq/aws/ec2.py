"""EC2 DescribeInstances for index misses and tag scoping, batched across messages."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

import spotq.clock
from spotq.errors import TransientError
from spotq.notices import InstanceId
from spotq.observability import metrics
from spotq.ports import InstanceInfo

log = logging.getLogger(__name__)

# DescribeInstances takes up to 200 values in one filter.
MAX_IDS = 200
# Misses arriving within this window share one call.
BATCH_WINDOW_SECONDS = 0.05
# Answers are kept this long: tags and DNS names rarely change, but they do (and a Spot wave names each instance a
# few times within seconds). "Not found" is kept briefly: a launching instance may be found a moment later.
FOUND_TTL_SECONDS = 300.0
NOT_FOUND_TTL_SECONDS = 30.0
# Bounded: a long-running process sees many instances come and go.
MAX_CACHED = 10_000


class InstanceLookup:
    """`describe(id)` queues a request; `run()` (owned by the app's TaskGroup) answers them in batches."""

    def __init__(self, client: Any, *, clock: Callable[[], float] = spotq.clock.loop_now) -> None:
        self._client = client
        self._clock = clock
        self._requests: asyncio.Queue[tuple[InstanceId, asyncio.Future[InstanceInfo | None]]] = asyncio.Queue()
        self._cache: OrderedDict[InstanceId, tuple[float, InstanceInfo | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    async def describe(self, instance_id: InstanceId) -> InstanceInfo | None:
        cached = self._cache.get(instance_id)
        if cached is not None:
            expires, info = cached
            if self._clock() < expires:
                return info
            del self._cache[instance_id]
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
            self._remember(instance_id, info)
            if not future.done():
                future.set_result(info)

    def _remember(self, instance_id: InstanceId, info: InstanceInfo | None) -> None:
        ttl = FOUND_TTL_SECONDS if info is not None else NOT_FOUND_TTL_SECONDS
        self._cache[instance_id] = (self._clock() + ttl, info)
        self._cache.move_to_end(instance_id)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)

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
