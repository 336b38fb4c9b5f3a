"""PDB-aware eviction admission and the priority rate limiter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from spotq import budgets as budgets_module
from spotq.budgets import Budgets
from spotq.observability import metrics
from spotq.ratelimit import Priority, TokenBucket


def pdb(name: str, allowed: int, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "app", "name": name, "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": name} if labels is None else labels}},
        "status": {
            "disruptionsAllowed": allowed,
            "observedGeneration": 2,
        },
    }


async def loop_turns(turns: int = 10) -> None:
    """Every task that can run gets to run (before checking that something did not happen); no wall-clock wait."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(condition: Callable[[], object]) -> None:
    async with asyncio.timeout(1):
        while not condition():
            await asyncio.sleep(0)


def test_a_pod_is_covered_by_exactly_one_matching_budget() -> None:
    budgets = Budgets()
    budgets.update(pdb("web", 1))
    budgets.update(pdb("all", 1, labels={}))  # an empty selector selects every pod in the namespace
    assert budgets.covering("app", {"app": "db"}) == ("app", "all")
    assert budgets.covering("app", {"app": "web"}) is None  # two budgets: the Eviction API refuses, we do not gate
    assert budgets.covering("other", {"app": "web"}) is None


def test_the_covering_budget_follows_budgets_added_removed_and_reselected(monkeypatch: pytest.MonkeyPatch) -> None:
    budgets = Budgets()
    budgets.update(pdb("web", 1))
    calls: list[str] = []
    real = budgets_module._matches
    monkeypatch.setattr(budgets_module, "_matches", lambda sel, labels: calls.append("m") or real(sel, labels))
    web = {"app": "web", "pod-template-hash": "abc"}
    assert budgets.covering("app", web) == ("app", "web")
    budgets.update(pdb("web", 0))  # a status update (every eviction) changes no selector
    for _ in range(100):
        assert budgets.covering("app", dict(web)) == ("app", "web")
    assert len(calls) == 1  # a wave's pods share a label set: matched once, not once per pod
    budgets.update(pdb("all", 1, labels={}))  # a second budget over the same pods: the API refuses, we do not gate
    assert budgets.covering("app", web) is None
    budgets.remove("app", "all")
    assert budgets.covering("app", web) == ("app", "web")
    budgets.update(pdb("web", 1, labels={"app": "db"}))  # its selector changed: it covers other pods now
    assert budgets.covering("app", web) is None
    assert budgets.covering("app", {"app": "db"}) == ("app", "web")
    budgets.replace_all([pdb("db", 1)])  # a relist without "web"
    assert budgets.covering("app", {"app": "db"}) == ("app", "db")


async def test_evictions_wait_for_room_earliest_deadline_then_earliest_drain_first() -> None:
    budgets = Budgets(2)  # two in flight at once, to see the order both are let in
    budgets.active = True
    budgets.update(pdb("web", 0))
    order: list[str] = []
    release = asyncio.Event()

    async def evict(pod: str, rank: tuple[float, int]) -> None:
        async with budgets.turn(("app", "web"), rank, patience=5):
            order.append(pod)
            await release.wait()

    ranks = {"late": (30.0, 0), "second-drain": (10.0, 2), "first-drain": (10.0, 1)}
    tasks = [asyncio.create_task(evict(pod, rank)) for pod, rank in ranks.items()]
    await loop_turns()
    assert order == []  # no room: nobody asks the API server
    budgets.update(pdb("web", 2))
    await until(lambda: len(order) >= 2)
    assert order == ["first-drain", "second-drain"]
    release.set()
    await loop_turns()
    assert order == ["first-drain", "second-drain"]  # both accepted: the two disruptions are spent
    budgets.update(pdb("web", 1))
    await asyncio.gather(*tasks)
    assert order == ["first-drain", "second-drain", "late"]


async def test_a_fixed_count_per_budget_is_kept_however_few_budgets_are_at_work() -> None:
    budgets = Budgets(3)  # SPOTQ_DRAIN__EVICTIONS_IN_FLIGHT_PER_BUDGET=3: one budget alone still has 3, not 4
    budgets.active = True
    budgets.update(pdb("web", 100))
    inside = 0
    most = 0

    async def evict(n: int) -> None:
        nonlocal inside, most
        async with budgets.turn(("app", "web"), (1.0, n), patience=5):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(evict(n) for n in range(20)))
    assert most == 3


def gauges() -> tuple[float | None, float | None]:
    sample = metrics.REGISTRY.get_sample_value
    return sample("spotq_evictions_in_flight_per_budget"), sample("spotq_budgets_at_work")


async def test_evictions_in_flight_per_budget_follow_how_many_budgets_have_work() -> None:
    # Automatic (the default): about the target across the budgets at work, 1 to 4 each. Concurrent evictions
    # under one budget conflict on its status in the API server; with few budgets one each leaves it idle.
    budgets = Budgets(in_flight_target=8)
    budgets.active = True
    names = [f"b{i}" for i in range(8)]
    for name in names:
        budgets.update(pdb(name, 100))
    inside = dict.fromkeys(names, 0)
    held = {name: asyncio.Event() for name in names}

    async def evict(name: str, n: int) -> None:
        async with budgets.turn(("app", name), (1.0, n), patience=5):
            inside[name] += 1
            await held[name].wait()
            inside[name] -= 1

    first = [asyncio.create_task(evict(name, 0)) for name in names]  # one eviction in flight under each
    await loop_turns()
    assert budgets.in_flight_per_budget == 1 and all(count == 1 for count in inside.values())
    assert gauges() == (1, 8)  # what an operator sees on /metrics
    more = [asyncio.create_task(evict(name, n)) for name in ("b0", "b1") for n in range(1, 6)]
    await loop_turns()
    assert inside["b0"] == inside["b1"] == 1  # eight budgets at work: one each
    for name in names[2:]:
        held[name].set()  # six budgets finish: two are left at work
    await asyncio.gather(*first[2:])
    await loop_turns()
    assert budgets.in_flight_per_budget == 4
    assert inside["b0"] == inside["b1"] == 4  # let in at once: no status update was needed
    assert gauges() == (4, 2)

    # Pods waiting under a budget that allows nothing count as work; once their drains give up, they do not.
    budgets.update(pdb("none", 0))
    held["none"], inside["none"] = asyncio.Event(), 0
    blocked = [asyncio.create_task(evict("none", n)) for n in range(3)]
    await loop_turns()
    assert budgets.in_flight_per_budget == 3  # ceil(8 / 3 budgets at work)
    for task in blocked:
        task.cancel()
    await asyncio.gather(*blocked, return_exceptions=True)
    assert budgets.in_flight_per_budget == 4
    held["b0"].set()
    held["b1"].set()
    await asyncio.gather(*first[:2], *more)
    assert budgets.in_flight_per_budget == 4  # nothing at work: a new wave's first budget starts with 4
    assert gauges() == (4, 0)


async def test_a_refused_eviction_passes_its_turn_on_at_once() -> None:
    budgets = Budgets()
    budgets.active = True
    budgets.update(pdb("web", 1))
    admitted: list[str] = []

    async def evict(pod: str, refused: bool) -> None:
        with contextlib.suppress(RuntimeError):
            async with budgets.turn(("app", "web"), (1.0, 0), patience=5):
                admitted.append(pod)
                await asyncio.sleep(0.01)
                if refused:
                    raise RuntimeError("429")

    async with asyncio.timeout(0.5):
        await asyncio.gather(evict("first", True), evict("second", False))
    assert admitted == ["first", "second"]


async def test_waiters_try_anyway_when_their_budget_stops_moving() -> None:
    budgets = Budgets()
    budgets.active = True
    budgets.update(pdb("web", 0))
    async with asyncio.timeout(1), budgets.turn(("app", "web"), (1.0, 0), patience=0.05):
        pass


async def test_without_a_watch_nothing_waits() -> None:
    budgets = Budgets()
    budgets.update(pdb("web", 0))
    async with asyncio.timeout(1), budgets.turn(("app", "web"), (1.0, 0), patience=30):
        pass


async def test_a_stopped_watch_releases_the_waiters() -> None:
    budgets = Budgets()
    budgets.active = True
    budgets.update(pdb("web", 0))
    waiter = asyncio.create_task(_turn(budgets))
    await loop_turns()
    assert not waiter.done()  # it waits for room
    budgets.stop()
    async with asyncio.timeout(1):
        await waiter


async def _turn(budgets: Budgets) -> None:
    async with budgets.turn(("app", "web"), (1.0, 0), patience=30):
        pass


async def test_rate_limit_serves_taints_before_drains_before_events() -> None:
    bucket = TokenBucket(qps=100, burst=1)
    await bucket.acquire()  # the bucket is now empty: everyone below waits
    await bucket.acquire(Priority.MARK)  # a taint borrows the next token; then it waits too
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await bucket.acquire(priority)
        order.append(name)

    await asyncio.gather(
        take("event", Priority.NOTE),
        take("evict", Priority.WORK),
        take("taint", Priority.MARK),
        take("list", Priority.WORK),
    )
    assert order == ["taint", "evict", "list", "event"]


async def test_a_wave_of_taints_borrows_one_burst_ahead() -> None:
    bucket = TokenBucket(qps=1, burst=10)
    async with asyncio.timeout(0.5):
        for _ in range(20):  # 10 saved + 10 borrowed: none waits
            await bucket.acquire(Priority.MARK)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await bucket.acquire(Priority.WORK)  # the debt is repaid before other work goes on


async def test_a_drain_cancelled_as_its_turn_comes_is_still_cancelled() -> None:
    budgets = Budgets()
    budgets.active = True
    budgets.update(pdb("web", 0))
    entered: list[str] = []

    async def evict() -> None:
        async with budgets.turn(("app", "web"), (1.0, 0), patience=5):
            entered.append("evict")

    task = asyncio.create_task(evict())
    await loop_turns()
    budgets.update(pdb("web", 1))  # the turn is granted ...
    task.cancel()  # ... in the same instant the drain's deadline cancels it
    with pytest.raises(asyncio.CancelledError):
        await task
    assert entered == []
    async with asyncio.timeout(1), budgets.turn(("app", "web"), (1.0, 1), patience=5):
        pass  # the room went to the next pod


async def test_a_drain_whose_deadline_moved_earlier_moves_up_the_queue() -> None:
    budgets = Budgets()
    budgets.active = True
    budgets.update(pdb("web", 0))
    order: list[str] = []

    async def evict(pod: str, rank: tuple[float, int]) -> None:
        async with budgets.turn(("app", "web"), rank, patience=5):
            order.append(pod)

    tasks = [asyncio.create_task(evict("soon", (10.0, 1))), asyncio.create_task(evict("moved", (30.0, 2)))]
    await loop_turns()
    budgets.reorder(2, 5.0)  # drain 2 now ends at 5.0, before drain 1
    budgets.update(pdb("web", 1))
    await until(lambda: order)
    await loop_turns()
    assert order == ["moved"]
    budgets.update(pdb("web", 1))
    await asyncio.gather(*tasks)
    assert order == ["moved", "soon"]


async def test_patience_runs_on_the_loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    now = loop.time()
    monkeypatch.setattr(loop, "time", lambda: now)  # a fake loop clock, moved by hand below
    budgets = Budgets()
    budgets.active = True
    budgets.update(pdb("web", 0))
    task = asyncio.create_task(_turn(budgets))  # patience 30 s
    await loop_turns()
    assert not task.done()
    now += 31  # the budget showed no progress for longer than the patience, by the loop's clock
    await loop_turns()
    assert task.done()


async def test_a_token_granted_to_a_waiter_cancelled_as_it_came_goes_to_the_next_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    now = loop.time()
    monkeypatch.setattr(loop, "time", lambda: now)  # a fake loop clock: no token comes unless it is moved
    bucket = TokenBucket(qps=1, burst=1)
    await bucket.acquire()  # the bucket is empty now
    first = asyncio.create_task(bucket.acquire())
    second = asyncio.create_task(bucket.acquire())
    await loop_turns()
    now += 1.0  # one token's worth: the first waiter's
    for _ in range(10):  # turns, not asyncio.timeout: the fake clock stands still
        if bucket.waiting == 1:
            break  # the refill timer granted the first waiter its token; that waiter has not run yet
        await asyncio.sleep(0)
    first.cancel()  # its node's deadline, in the same instant
    with pytest.raises(asyncio.CancelledError):
        await first
    await loop_turns()
    assert second.done()  # the returned token went on without waiting for another second
