"""The EC2 lookup cache: batched, bounded, and answers expire (a "not found" soon, a found instance later)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from spotq.aws import ec2
from spotq.notices import InstanceId


@dataclass
class FakeEc2:
    """DescribeInstances over a dict of instance id → private DNS name; counts calls."""

    instances: dict[str, str] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    async def describe_instances(self, **query: Any) -> dict[str, Any]:
        ids = query["Filters"][0]["Values"]
        self.calls.append(list(ids))
        found = [{"InstanceId": i, "PrivateDnsName": self.instances[i]} for i in ids if i in self.instances]
        return {"Reservations": [{"Instances": found}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def lookup_with(fake: FakeEc2, clock: Clock) -> tuple[ec2.InstanceLookup, asyncio.Task[None]]:
    lookup = ec2.InstanceLookup(fake, clock=clock)
    return lookup, asyncio.create_task(lookup.run())


async def test_not_found_expires_so_a_launching_instance_is_found_later() -> None:
    fake, clock = FakeEc2(), Clock()
    lookup, task = await lookup_with(fake, clock)
    try:
        instance = InstanceId("i-0123456789abcdef0")
        assert await lookup.describe(instance) is None
        fake.instances[instance] = "ip-10-0-0-1.ec2.internal"
        assert await lookup.describe(instance) is None  # cached "not found"
        clock.now += ec2.NOT_FOUND_TTL_SECONDS + 1
        info = await lookup.describe(instance)
        assert info is not None and info.private_dns_name == "ip-10-0-0-1.ec2.internal"
        assert len(fake.calls) == 2
    finally:
        task.cancel()


async def test_found_answers_expire_too() -> None:
    fake, clock = FakeEc2({"i-0123456789abcdef0": "old-name"}), Clock()
    lookup, task = await lookup_with(fake, clock)
    try:
        instance = InstanceId("i-0123456789abcdef0")
        assert (await lookup.describe(instance)).private_dns_name == "old-name"  # type: ignore[union-attr]
        fake.instances[instance] = "new-name"
        clock.now += ec2.NOT_FOUND_TTL_SECONDS + 1
        assert (await lookup.describe(instance)).private_dns_name == "old-name"  # type: ignore[union-attr]
        clock.now += ec2.FOUND_TTL_SECONDS
        assert (await lookup.describe(instance)).private_dns_name == "new-name"  # type: ignore[union-attr]
    finally:
        task.cancel()


async def test_the_cache_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(ec2, "MAX_CACHED", 5)
    fake, clock = FakeEc2(), Clock()
    lookup, task = await lookup_with(fake, clock)
    try:
        for n in range(12):
            await lookup.describe(InstanceId(f"i-{n:017x}"))
        assert len(lookup) == 5
    finally:
        task.cancel()


async def test_answers_expire_by_the_loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    real, ahead = loop.time, [0.0]
    monkeypatch.setattr(loop, "time", lambda: real() + ahead[0])
    fake = FakeEc2()
    lookup = ec2.InstanceLookup(fake)
    task = asyncio.create_task(lookup.run())
    try:
        instance = InstanceId("i-0123456789abcdef0")
        assert await lookup.describe(instance) is None
        fake.instances[instance] = "ip-10-0-0-1.ec2.internal"
        ahead[0] = ec2.NOT_FOUND_TTL_SECONDS + 1
        assert await lookup.describe(instance) is not None
    finally:
        task.cancel()
