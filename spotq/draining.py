"""Drain one node the way `kubectl drain` does, inside the notice's deadline.

Pods are evicted concurrently through the Eviction API; deletions are awaited on one watch per node (not by
polling each pod); a pod whose PodDisruptionBudget allows no disruption now waits for the budget to make room
(budgets.Budgets, earliest deadline first) instead of asking again and again; a refusal (429) that still happens
backs off and retries; at the deadline the drain stops and names what blocked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from spotq.budgets import BudgetKey, Budgets
from spotq.errors import ApiError, SpotqError
from spotq.observability import metrics

log = logging.getLogger(__name__)

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})

# How long a budget may show no progress (no status update, no admission) before its waiting pods ask the API
# server anyway: a lost watch event must not stall a drain; the watch normally reports a change within a second.
BUDGET_PATIENCE_SECONDS = 10.0
# The Eviction API names the budget that refused: "The disruption budget web needs 3 healthy pods and has 3 ...".
# Drains are numbered as they start: among equal deadlines, earlier drains' pods take budget room first.
_DRAINS = itertools.count()
_REFUSING_BUDGET = re.compile(r"disruption budget ([a-z0-9]([-a-z0-9.]*[a-z0-9])?) needs")


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    phase: str = "Running"
    grace_seconds: int = 30
    controller_kind: str | None = None
    mirror: bool = False
    uses_emptydir: bool = False
    terminating: bool = False
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs: which PDB covers the pod

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES


@dataclass(frozen=True)
class DrainOptions:
    delete_emptydir_data: bool = True
    evict_unmanaged_pods: bool = True
    force_delete_before_deadline_seconds: float = 0.0
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 5.0
    protected: frozenset[str] = frozenset()  # namespace/name of pods never evicted (spotq's own)


PodEvent = tuple[str, Pod | None, str]  # (watch event type, pod or None for bookmarks, resourceVersion)


class PodApi(Protocol):
    async def open_on_node(self, node: str) -> tuple[list[Pod], str, AsyncGenerator[PodEvent, None] | None]:
        """The node's pods, their resourceVersion and, where one request gives both, the watch from there on."""
        ...

    async def list_on_node(self, node: str) -> tuple[list[Pod], str]: ...

    def watch_on_node(self, node: str, version: str) -> AsyncGenerator[PodEvent, None]:
        """Yield (event type, pod or None for bookmarks, resourceVersion) until the server ends the watch."""
        ...

    async def evict(self, pod: Pod, grace_seconds: int | None) -> None: ...

    async def delete(self, pod: Pod, grace_seconds: int | None) -> None: ...


@dataclass
class DrainReport:
    node: str
    evicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False

    @property
    def complete(self) -> bool:
        return not self.timed_out and not self.blocked


@dataclass(frozen=True)
class Selection:
    evict: tuple[Pod, ...]
    wait_only: tuple[Pod, ...]
    skipped: tuple[Pod, ...]
    refused: tuple[tuple[Pod, str], ...]


def select(pods: list[Pod], options: DrainOptions) -> Selection:
    """Which pods to evict, only wait for, skip, or refuse (pure; kubectl drain's filters)."""
    evict: list[Pod] = []
    wait_only: list[Pod] = []
    skipped: list[Pod] = []
    refused: list[tuple[Pod, str]] = []
    for pod in pods:
        if pod.mirror or pod.controller_kind == "DaemonSet" or pod.key in options.protected:
            skipped.append(pod)
        elif pod.terminating:
            wait_only.append(pod)
        elif pod.uses_emptydir and not options.delete_emptydir_data and not pod.finished:
            refused.append((pod, "uses emptyDir and drain.delete_emptydir_data is off"))
        elif pod.controller_kind is None and not options.evict_unmanaged_pods and not pod.finished:
            refused.append((pod, "has no controller and drain.evict_unmanaged_pods is off"))
        else:
            evict.append(pod)
    return Selection(tuple(evict), tuple(wait_only), tuple(skipped), tuple(refused))


def clamp_grace(pod_grace: int, seconds_left: float) -> int | None:
    """None keeps the pod's own grace; otherwise a shorter one that ends before the deadline."""
    if pod_grace <= seconds_left - 1:
        return None
    return max(0, int(seconds_left) - 1)


def backoff(attempt: int, options: DrainOptions, retry_after: float | None) -> float:
    """Exponential with jitter, at least Retry-After, never zero."""
    delay = min(options.retry_max_seconds, options.retry_initial_seconds * (2**attempt))
    delay = random.uniform(delay / 2, delay)
    return max(delay, retry_after or 0.0, 0.05)


class _Watcher:
    """One watch of the node's pods; sets an event per pod UID when it is gone from the node."""

    def __init__(self, api: PodApi, node: str, version: str) -> None:
        self._api = api
        self._node = node
        self._version = version
        self._gone: dict[str, asyncio.Event] = {}

    def gone(self, uid: str) -> asyncio.Event:
        return self._gone.setdefault(uid, asyncio.Event())

    async def run(self, live: AsyncGenerator[PodEvent, None] | None = None) -> None:
        """Follow `live` (the watch the pods came with) if given, then watches of our own until cancelled."""
        failures = 0
        while True:
            stream = live if live is not None else self._api.watch_on_node(self._node, self._version)
            live = None
            try:
                async for event_type, pod, version in stream:
                    failures = 0
                    self._version = version or self._version
                    if event_type == "DELETED" and pod is not None:
                        self.gone(pod.uid).set()
            except SpotqError as exc:
                failures += 1
                if isinstance(exc, ApiError) and exc.status == 410:
                    await self._resync()
                log.debug("pod watch restarting", extra={"node": self._node, "error": str(exc)[:200]})
                await asyncio.sleep(min(2.0, 0.1 * 2**failures))
            else:
                # The server closed the watch (timeout): resync so nothing deleted in between is missed.
                await self._resync()

    async def _resync(self) -> None:
        try:
            pods, self._version = await self._api.list_on_node(self._node)
        except SpotqError:
            return
        present = {pod.uid for pod in pods}
        for uid, event in self._gone.items():
            if uid not in present:
                event.set()


async def drain(
    node: str,
    deadline: float,
    api: PodApi,
    options: DrainOptions,
    evictions: asyncio.Semaphore,
    budgets: Budgets | None = None,
) -> DrainReport:
    """Evict every pod that should go and wait until they are gone, or until `deadline` (loop time)."""
    report = DrainReport(node)
    order = (deadline, next(_DRAINS))
    pods, version, live = await api.open_on_node(node)
    selection = select(pods, options)
    report.skipped = [pod.key for pod in selection.skipped]
    report.blocked.update({pod.key: reason for pod, reason in selection.refused})
    watcher = _Watcher(api, node, version)
    pending: dict[str, str] = {}  # pod key → why it is not gone yet
    for pod in (*selection.evict, *selection.wait_only):
        watcher.gone(pod.uid)  # register before the watch starts

    async def remove(pod: Pod) -> None:
        pending[pod.key] = "eviction not yet accepted"
        if pod in selection.wait_only:
            result = "waiting"
        else:
            result = await _evict(pod, order, api, options, evictions, pending, budgets or Budgets())
        if result == "refused":
            return  # stays in `pending` with its reason
        if result == "evicted":
            report.evicted.append(pod.key)
        if result != "gone" and not pod.finished:
            pending[pod.key] = "terminating"
            await watcher.gone(pod.uid).wait()
        pending.pop(pod.key, None)

    watch_task: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout_at(deadline):
            async with asyncio.TaskGroup() as group:
                watch_task = group.create_task(watcher.run(live))
                removals = [group.create_task(remove(pod)) for pod in (*selection.evict, *selection.wait_only)]
                if removals:
                    await asyncio.wait(removals)
                watch_task.cancel()
    except TimeoutError:
        report.timed_out = True
    finally:
        if watch_task is not None:
            watch_task.cancel()
        if live is not None:
            # Closed already if the watch task ran; if it never did, this ends the request.
            with contextlib.suppress(Exception):
                await live.aclose()
    report.blocked.update(pending)
    return report


async def _evict(
    pod: Pod,
    order: tuple[float, int],
    api: PodApi,
    options: DrainOptions,
    evictions: asyncio.Semaphore,
    pending: dict[str, str],
    budgets: Budgets,
) -> Literal["evicted", "gone", "refused"]:
    """Evict (or, near the deadline if allowed, delete) until accepted; "refused" when it never can be."""
    loop = asyncio.get_running_loop()
    deadline = order[0]
    attempt = 0
    budget: BudgetKey | None = budgets.covering(pod.namespace, dict(pod.labels))
    while True:
        seconds_left = deadline - loop.time()
        grace = clamp_grace(pod.grace_seconds, seconds_left)
        force = (
            options.force_delete_before_deadline_seconds > 0
            and seconds_left <= options.force_delete_before_deadline_seconds
            and attempt > 0
        )
        try:
            async with budgets.turn(None if force else budget, order, BUDGET_PATIENCE_SECONDS), evictions:
                if force:
                    await api.delete(pod, grace)
                else:
                    await api.evict(pod, grace)
            metrics.EVICTIONS.labels(result="force_deleted" if force else "evicted").inc()
            return "evicted"
        except ApiError as exc:
            if exc.status in (404, 409):
                metrics.EVICTIONS.labels(result="gone").inc()
                return "gone"
            if exc.status == 500 and "more than one PodDisruptionBudget" in exc.body:
                metrics.EVICTIONS.labels(result="multiple_pdbs").inc()
                pending[pod.key] = "covered by more than one PodDisruptionBudget"
                return "refused"  # the API server will never evict it: stop asking
            if exc.status == 429:
                metrics.EVICTIONS.labels(result="pdb_blocked").inc()
                pending[pod.key] = "a PodDisruptionBudget allows no disruption (429)"
                refusing = _REFUSING_BUDGET.search(exc.body)
                if refusing and budgets.active:
                    # The budget's next status change is what to wait for: a short pause covers a watch that
                    # has not yet seen the refusal, then `turn` waits for room.
                    budget = (pod.namespace, refusing.group(1))
                    await asyncio.sleep(
                        random.uniform(options.retry_initial_seconds / 2, options.retry_initial_seconds)
                    )
                    attempt += 1
                    continue
            else:
                metrics.EVICTIONS.labels(result="error").inc()
                pending[pod.key] = f"eviction failed: {exc.status} {exc.reason}"
            await asyncio.sleep(backoff(attempt, options, exc.retry_after))
        except SpotqError as exc:
            metrics.EVICTIONS.labels(result="error").inc()
            pending[pod.key] = f"eviction failed: {exc}"[:200]
            await asyncio.sleep(backoff(attempt, options, None))
        attempt += 1
