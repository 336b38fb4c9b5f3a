"""Rebalance recommendations no interruption followed: which nodes get their marks back, and when."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from spotq import expiring
from spotq.notices import Kind
from spotq.ports import NodeRef, NoticeRecord

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def node(*records: NoticeRecord, name: str = "n1") -> NodeRef:
    return NodeRef(
        name=name, uid=f"uid-{name}", instance_id=None, hostname=None, in_scope=True, ready=True,
        resource_version="1", records=records,
    )  # fmt: skip


def rebalance(age: timedelta, notice_id: str | None = "r-1") -> NoticeRecord:
    return NoticeRecord(Kind.REBALANCE_RECOMMENDATION, notice_id, None, NOW - age)


def test_a_recommendation_alone_on_record_expires_after_its_time() -> None:
    assert expiring.expired_recommendation(node(rebalance(HOUR)), NOW, HOUR) == rebalance(HOUR)
    assert expiring.expired_recommendation(node(rebalance(HOUR - timedelta(seconds=1))), NOW, HOUR) is None


@pytest.mark.parametrize(
    "records",
    [
        (),
        (rebalance(2 * HOUR), NoticeRecord(Kind.SPOT_INTERRUPTION, "s-1", NOW, NOW - HOUR)),  # the warning followed
        (NoticeRecord(Kind.SPOT_INTERRUPTION, "s-1", NOW, NOW - 2 * HOUR),),
        (rebalance(2 * HOUR, notice_id=None),),
        (NoticeRecord(Kind.REBALANCE_RECOMMENDATION, "r-1", None, None),),  # no time on record: never guessed
    ],
)
def test_nothing_else_expires(records: tuple[NoticeRecord, ...]) -> None:
    assert expiring.expired_recommendation(node(*records), NOW, HOUR) is None


def test_the_sweep_interval_is_a_tenth_of_the_expiry_within_bounds() -> None:
    assert expiring.sweep_interval(timedelta(seconds=5)) == 1.0
    assert expiring.sweep_interval(timedelta(seconds=300)) == 30.0
    assert expiring.sweep_interval(HOUR) == 60.0


@dataclass
class Recorder:
    nodes_: list[NodeRef]
    released: list[tuple[str, Kind, str]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    swept: asyncio.Event = field(default_factory=asyncio.Event)

    def nodes(self) -> list[NodeRef]:
        self.swept.set()
        return self.nodes_

    async def release_for(self, ref: NodeRef, kind: Kind, notice_id: str) -> bool:
        if ref.name in self.fail:
            raise RuntimeError("503")
        self.released.append((ref.name, kind, notice_id))
        return ref.name not in self.refuse

    async def node_event(self, ref: NodeRef, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((ref.name, reason))


async def test_the_sweep_releases_expired_nodes_says_so_and_survives_a_failure() -> None:
    old = rebalance(2 * HOUR)
    fake = Recorder(
        [node(old, name="gone"), node(old, name="raced"), node(old, name="broken"), node(rebalance(HOUR / 2), name="young")],
        refuse={"raced"},  # a Spot warning was recorded meanwhile: the precondition-guarded patch wrote nothing
        fail={"broken"},
    )  # fmt: skip
    fake.synced.set()
    sweeping = asyncio.create_task(
        expiring.expire_recommendations(fake, fake, fake, HOUR, interval=3600, now=lambda: NOW)  # type: ignore[arg-type]
    )
    await fake.swept.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    sweeping.cancel()
    assert [name for name, _, _ in fake.released] == ["gone", "raced"]
    assert fake.events == [("gone", "RebalanceExpired")]
