"""The replicas' Leases (kube/leases.py) over a fake transport: this replica's created and renewed, the others'
judged by when their renewals were seen, a deleted one gone at once, and this replica's drains fenced when it
cannot renew in time."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spotq.errors import ApiError, TransientError
from spotq.kube.leases import ReplicaLeases, lease_name
from tests.unit.fake_transport import HOLD, FakeTransport

JSON = dict[str, Any]
NS = "kube-system"


def lease(holder: str, renewed: datetime | None = None, version: str = "1", seconds: int = 10) -> JSON:
    when = (renewed or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "metadata": {"name": lease_name(holder), "namespace": NS, "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds, "renewTime": when},
    }


def listing(*leases: JSON) -> JSON:
    return {"items": list(leases), "metadata": {"resourceVersion": "5"}}


@contextlib.asynccontextmanager
async def running(leases: ReplicaLeases) -> AsyncIterator[None]:
    """`leases.run()` for the length of the block."""
    async with asyncio.TaskGroup() as group:
        task = group.create_task(leases.run())
        try:
            yield
        finally:
            task.cancel()


def test_a_lease_is_named_for_its_replica_within_the_name_rules() -> None:
    assert lease_name("spotq-7d9f5c-x2k4p") == "spotq-replica-spotq-7d9f5c-x2k4p"
    assert lease_name("Host_Name-12") == "spotq-replica-host-name-12"
    assert len(lease_name("x" * 300)) == 253


async def test_this_replicas_lease_is_created_then_renewed_from_the_version_last_written() -> None:
    created = lease("a", version="11")
    created["spec"]["acquireTime"] = "2025-06-03T14:20:05.000000Z"
    transport = FakeTransport(
        answers={
            "create_lease": [created],
            "update_lease": [lease("a", version="12"), lease("a", version="13")],
            "list_leases": [listing()],
        }
    )
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=1.0)
    async with running(leases):
        await transport.wait_for_calls("update_lease", 2)
        create, first, second = [c.body for c in transport.calls if c.operation in ("create_lease", "update_lease")][:3]
        assert create is not None and create["spec"]["holderIdentity"] == "a"
        assert create["spec"]["leaseDurationSeconds"] == 1 and create["metadata"]["labels"] == {
            "spotq.io/replica": "true"
        }
        assert first is not None and first["metadata"]["resourceVersion"] == "11"
        assert second is not None and second["metadata"]["resourceVersion"] == "12"
        assert first["spec"]["acquireTime"] == "2025-06-03T14:20:05.000000Z"  # kept from the Lease as written
        listed = next(c for c in transport.calls if c.operation == "list_leases")
        assert listed.query["labelSelector"] == "spotq.io/replica"
        assert leases.holding()


async def test_a_lease_that_exists_already_is_read_and_taken_on() -> None:
    """This replica's pod restarted its container: its Lease is still there."""
    transport = FakeTransport(
        answers={
            "create_lease": [ApiError(409, "Conflict", "already exists")],
            "get_lease": [lease("a", version="40")],
            "update_lease": [lease("a", version="41")],
            "list_leases": [listing()],
        }
    )
    async with running(ReplicaLeases(transport, NS, "a", lease_seconds=10.0)):
        await transport.wait_for_calls("update_lease", 1)
        update = next(c.body for c in transport.calls if c.operation == "update_lease")
        assert update is not None and update["metadata"]["resourceVersion"] == "40"


async def test_another_replica_expires_a_lease_after_its_last_renewal_seen() -> None:
    b = lease("b", version="2")
    renewed = lease("b", datetime.now(UTC) + timedelta(seconds=1), version="3")
    transport = FakeTransport(
        answers={"create_lease": [lease("a")], "list_leases": [listing(b)]},
        streams={"watch_leases": [[HOLD]]},
    )
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=10.0)
    loop = asyncio.get_running_loop()
    assert leases.expires_at("b") is None  # not listed yet: nobody is taken over
    async with running(leases):
        await transport.wait_for_calls("watch_leases", 1)
        listed_at = loop.time()
        expires = leases.expires_at("b")
        assert expires is not None and listed_at - 1 < expires - 10 <= listed_at
        await leases._event("MODIFIED", {**b, "metadata": {**b["metadata"], "resourceVersion": "2b"}})
        assert leases.expires_at("b") == expires  # the same renewTime: not a renewal
        await leases._event("MODIFIED", renewed)
        later = leases.expires_at("b")
        assert later is not None and later > expires
        assert leases.expires_at("a") is None  # this replica itself


async def test_a_deleted_lease_is_gone_at_once_and_wakes_the_waiters() -> None:
    b = lease("b")
    transport = FakeTransport(
        answers={"create_lease": [lease("a")], "list_leases": [listing(b)]},
        streams={"watch_leases": [[HOLD]]},
    )
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=10.0)
    async with running(leases):
        await transport.wait_for_calls("watch_leases", 1)
        before = leases.changes
        waiter = asyncio.create_task(leases.changed(before))
        await asyncio.sleep(0)
        await leases._event("DELETED", b)
        async with asyncio.timeout(1):
            await waiter
            await leases.changed(before)  # a wait begun after the change, with the count read before it: at once
        assert leases.expires_at("b") == -math.inf
        assert leases.changes == before + 1


async def test_a_lease_renewed_long_ago_by_its_holders_clock_is_expired_when_first_listed() -> None:
    old = lease("b", datetime.now(UTC) - timedelta(minutes=5))
    transport = FakeTransport(
        answers={"create_lease": [lease("a")], "list_leases": [listing(old)]}, streams={"watch_leases": [[HOLD]]}
    )
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=10.0)
    async with running(leases):
        await transport.wait_for_calls("watch_leases", 1)
        expires = leases.expires_at("b")
        assert expires is not None and expires <= asyncio.get_running_loop().time()


async def test_a_drainer_without_a_lease_yet_gets_a_full_lease_of_grace() -> None:
    """Its claim came on the node watch before its Lease on this one."""
    transport = FakeTransport(
        answers={"create_lease": [lease("a")], "list_leases": [listing()]}, streams={"watch_leases": [[HOLD]]}
    )
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=10.0)
    async with running(leases):
        await transport.wait_for_calls("watch_leases", 1)
        now = asyncio.get_running_loop().time()
        expires = leases.expires_at("c")
        assert expires is not None and now + 9 < expires <= now + 10.5
        assert leases.expires_at("c") == expires  # counted from the first time asked


async def test_while_the_lease_watch_is_broken_nobody_is_taken_over() -> None:
    transport = FakeTransport(
        answers={"create_lease": [lease("a")], "list_leases": [listing(lease("b"))]},
        streams={"watch_leases": [[TransientError("connection reset")]]},
    )
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=10.0)
    async with running(leases):
        await transport.wait_for_calls("watch_leases", 1)
        await asyncio.sleep(0)
        assert leases.expires_at("b") is None and leases.expires_at("c") is None


async def test_a_replica_that_cannot_renew_lets_go_before_the_others_could_see_it_expire() -> None:
    refused = [ApiError(403, "Forbidden", "leases is forbidden") for _ in range(20)]
    transport = FakeTransport(
        answers={"create_lease": [lease("a")], "update_lease": refused, "list_leases": [listing()]}
    )
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=1.0)
    loop = asyncio.get_running_loop()
    async with running(leases):
        await transport.wait_for_calls("create_lease", 1)
        written = loop.time()
        await asyncio.sleep(0)
        assert leases.held()
        async with asyncio.timeout(5):
            await leases.lost()
        assert 0.7 <= loop.time() - written < 1.0  # a fifth of the Lease before it could look expired
        assert not leases.holding() and not leases.held()


async def test_a_lease_never_written_does_not_stop_drains_but_is_not_ready() -> None:
    """No RBAC for Leases: nobody saw this replica's Lease live, so nobody waits on it; draining goes on."""
    refused = [ApiError(403, "Forbidden", "leases is forbidden") for _ in range(20)]
    transport = FakeTransport(answers={"create_lease": refused, "list_leases": [listing()]})
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=1.0)
    async with running(leases):
        await transport.wait_for_calls("create_lease", 6)  # past the Lease's duration
        assert leases.holding() and not leases.held()


async def test_a_clean_stop_deletes_this_replicas_lease() -> None:
    transport = FakeTransport(
        answers={"create_lease": [lease("a")], "list_leases": [listing()], "delete_lease": [{}]},
        streams={"watch_leases": [[HOLD]]},
    )
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=10.0)
    task = asyncio.create_task(leases.run())
    await transport.wait_for_calls("create_lease", 1)
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await leases.release()
    assert transport.operations()[-1] == "delete_lease" and not leases.holding()


class _StallsOnce(FakeTransport):
    """Answers the `stalled`-th Lease update only after `stall` s: an API server paused while the renewal was in
    flight (SIGSTOP), answering when it comes back."""

    def __init__(self, *, stalled: int, stall: float, updates: list[JSON | BaseException]) -> None:
        super().__init__(
            answers={"create_lease": [lease("a")], "update_lease": list(updates), "list_leases": [listing()]},
            streams={"watch_leases": [[HOLD]]},
        )
        self.stalled, self.stall, self.updates = stalled, stall, 0
        self.sent: list[float] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        if kwargs.get("operation") == "update_lease":
            self.updates += 1
            self.sent.append(asyncio.get_running_loop().time())
            if self.updates == self.stalled:
                await asyncio.sleep(self.stall)
        return await super().request(method, path, **kwargs)


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.005)


async def _holding_while(leases: ReplicaLeases, seconds: float) -> list[bool]:
    """`leases.holding()` each time it changes, sampled every 10 ms for `seconds`."""
    seen: list[bool] = []
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        now = leases.holding()
        if not seen or seen[-1] != now:
            seen.append(now)
        await asyncio.sleep(0.01)
    return seen


async def _holding_around_the_stall(
    transport: _StallsOnce, *, lease_seconds: float, watch_seconds: float
) -> list[bool]:
    """Replica "a" on `transport`: `holding()` as it changes from the stalled renewal's send on."""
    leases = ReplicaLeases(transport, NS, "a", lease_seconds=lease_seconds)
    async with running(leases):
        await _until(lambda: transport.updates == transport.stalled)
        return await _holding_while(leases, watch_seconds)


async def test_after_a_stalled_renewal_the_next_goes_out_at_once_and_the_drains_stop_only_once() -> None:
    # Lease 2 s: renewed every 0.4 s, drains stop 1.6 s after a renewal's send. The third update stalls 1.4 s: the
    # second's watchdog stops the drains meanwhile; the stalled one comes back with 0.2 s left on its own watchdog.
    # Paced from the answer, the next renewal would go out 0.4 s later, after that watchdog: the drains resumed
    # in between would be stopped a second time (the API server then left a cut-off eviction half done).
    transport = _StallsOnce(stalled=3, stall=1.4, updates=[lease("a") for _ in range(40)])
    seen = await _holding_around_the_stall(transport, lease_seconds=2.0, watch_seconds=2.5)
    assert seen == [True, False, True]
    answered = transport.sent[2] + 1.4
    assert transport.sent[3] - answered < 0.1  # the renewal after the stalled one: at once


async def test_a_renewal_answered_after_its_watchdog_does_not_let_the_drains_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Lease 1 s: drains stop 0.8 s after a renewal's send. The second update comes back 1.5 s after it was sent:
    # the others may see the Lease expire any moment from then; only the next renewal, in time, resumes the drains.
    transport = _StallsOnce(stalled=2, stall=1.5, updates=[lease("a"), lease("a"), ApiError(500, "x", "y")])
    seen = await _holding_around_the_stall(transport, lease_seconds=1.0, watch_seconds=2.2)
    # The stalled answer (1.5 s after its send) and the refused one after it: lost from the first watchdog on, said
    # once (not cleared by the late answer for a moment and lost again).
    assert seen == [True, False]
    stops = [r for r in caplog.records if r.getMessage().startswith("replica lease not renewed in time")]
    assert len(stops) == 1
