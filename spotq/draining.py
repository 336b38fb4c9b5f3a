"""Drain one node the way `kubectl drain` does, inside the notice's deadline (which a later notice may move earlier).

Pods are evicted concurrently through the Eviction API; deletions are awaited on one watch per node (not by
polling each pod), and pods bound to the node after the first look arrive on that watch and are evicted too; once
every eviction is accepted and the settle period is over, the drain is "quiet" (`on_quiet`): what is left is
waiting for the pods' grace, which the PodApi may follow on a watch shared with other quiet drains; a pod
whose PodDisruptionBudget allows no disruption now waits for the budget to make room (budgets.Budgets, earliest
deadline first) instead of asking again and again; a refusal (429) that still happens backs off and retries; if
enabled, a pod still blocked that long before the deadline is deleted instead; at the deadline the drain stops and
names what blocked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal

from spotq.backoff import Backoff
from spotq.budgets import BudgetKey, Budgets
from spotq.errors import ApiError, SpotqError
from spotq.observability import metrics
from spotq.ports import Pod, PodApi

log = logging.getLogger(__name__)

# How long a budget may show no progress (no status update, no admission) before its waiting pods ask the API
# server anyway: a lost watch event must not stall a drain; the watch normally reports a change within a second.
BUDGET_PATIENCE_SECONDS = 10.0
# Drains are numbered as they start: among equal deadlines, earlier drains' pods take budget room first.
_DRAINS = itertools.count()
# The Eviction API names the budget that refused: "The disruption budget web needs 3 healthy pods and has 3 ...".
_REFUSING_BUDGET = re.compile(r"disruption budget ([a-z0-9]([-a-z0-9.]*[a-z0-9])?) needs")


@dataclass(frozen=True)
class DrainOptions:
    delete_emptydir_data: bool = True
    evict_unmanaged_pods: bool = True
    force_delete_before_deadline_seconds: float = 0.0
    # Delete a pod whose eviction its budget admitted and the API server never carried out (_complete_admitted).
    complete_admitted_evictions: bool = True
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 5.0
    protected: frozenset[str] = frozenset()  # namespace/name of pods never evicted (spotq's own)
    # A pod the scheduler bound just before the taint landed shows up on the watch a moment after the first look:
    # the drain is not complete before this long after its start (as Karpenter does), nor after the deadline.
    settle_seconds: float = 5.0
    # System-critical pods go last (kubelet graceful shutdown, Karpenter): once every ordinary pod has gone, or this
    # long before the deadline, whichever is first.
    critical_reserve_seconds: float = 20.0

    @property
    def retry_backoff(self) -> Backoff:
        return Backoff(self.retry_initial_seconds, self.retry_max_seconds, jitter=0.5, min_seconds=0.05)


class DrainDeadline:
    """A drain's deadline in loop time. A later notice may move it earlier, never later; the drain's timeouts, its
    grace clamping, its force-delete time and its place in the budgets' queues follow it."""

    def __init__(self, at: float) -> None:
        self._at = at
        self._timeouts: list[tuple[asyncio.Timeout, float]] = []
        self._listeners: list[Callable[[float], None]] = []

    @property
    def at(self) -> float:
        return self._at

    def seconds_left(self) -> float:
        return self._at - asyncio.get_running_loop().time()

    def move_earlier(self, at: float) -> bool:
        """Move the deadline to `at` (loop time) if that is earlier; True if it moved."""
        if at >= self._at:
            return False
        self._at = at
        for timeout, before in self._timeouts:
            if not timeout.expired():
                timeout.reschedule(at - before)
        for listener in list(self._listeners):
            listener(at)
        return True

    @contextlib.asynccontextmanager
    async def timeout(self, before: float = 0.0) -> AsyncIterator[None]:
        """asyncio.timeout_at(`before` s ahead of the deadline), following the deadline when it moves."""
        async with asyncio.timeout_at(self._at - before) as timeout:
            entry = (timeout, before)
            self._timeouts.append(entry)
            try:
                yield
            finally:
                self._timeouts.remove(entry)

    @contextlib.contextmanager
    def on_move(self, listener: Callable[[float], None]) -> Iterator[None]:
        """Call `listener(at)` whenever the deadline moves, while inside."""
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)


@dataclass
class DrainReport:
    node: str
    evicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    forced: dict[str, str] = field(default_factory=dict)  # pod key → why it was deleted without an eviction
    timed_out: bool = False
    protected: list[Pod] = field(default_factory=list)  # options.protected pods found on the node (spotq's own)

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
    """None keeps the pod's own grace; otherwise a shorter one that ends before the deadline, but never under 1 s:
    0 removes the pod from the API at once, while its containers may still run."""
    if pod_grace <= max(1, seconds_left - 1):
        return None
    return max(1, int(seconds_left) - 1)


def backoff(attempt: int, options: DrainOptions, retry_after: float | None) -> float:
    """The pause before eviction attempt `attempt` + 1: exponential with jitter, at least Retry-After, never zero."""
    return options.retry_backoff.seconds(attempt + 1, retry_after=retry_after)


class _Watcher:
    """The drain's view of the node's pods (fed by PodApi.follow_node): sets an event per pod UID when it is gone
    from the node, hands the first look to `found` and pods it has not seen before (bound to the node after the
    first look) to `arrived`. A relist is compared with what it knows: a pod missing from it is gone."""

    def __init__(self, found: Callable[[list[Pod]], None], arrived: Callable[[Pod], None]) -> None:
        self._found = found
        self._arrived = arrived
        self._seen: set[str] = set()
        self._gone: dict[str, asyncio.Event] = {}
        self.listed = asyncio.Event()

    def seen(self, pod: Pod) -> None:
        self._seen.add(pod.uid)

    def gone(self, uid: str) -> asyncio.Event:
        return self._gone.setdefault(uid, asyncio.Event())

    def on_list(self, pods: list[Pod]) -> None:
        if not self.listed.is_set():
            self.listed.set()
            self._found(pods)
            return
        present = {pod.uid for pod in pods}
        for uid, event in self._gone.items():
            if uid not in present:
                event.set()
        for pod in pods:
            self._arrive(pod)

    def on_event(self, event_type: str, pod: Pod) -> None:
        if event_type == "DELETED":
            self.gone(pod.uid).set()
        elif event_type in ("ADDED", "MODIFIED"):
            # A field-selector watch reports a pod newly bound to the node as ADDED.
            self._arrive(pod)

    def _arrive(self, pod: Pod) -> None:
        if pod.uid not in self._seen:
            self._seen.add(pod.uid)
            self._arrived(pod)


async def drain(
    node: str,
    deadline: float | DrainDeadline,
    api: PodApi,
    options: DrainOptions,
    evictions: asyncio.Semaphore,
    budgets: Budgets | None = None,
    on_evicted: Callable[[Pod], None] | None = None,
    on_quiet: Callable[[], None] | None = None,
) -> DrainReport:
    """Evict every pod that should go, including pods bound to the node meanwhile, and wait until they are gone
    (and at least `options.settle_seconds` since the start), or until the deadline (loop time; a DrainDeadline can
    be moved earlier while the drain runs). `on_evicted` is called once per pod UID whose eviction (or forced
    delete) the API server accepted, at once (it must not block). `on_quiet` is called once, if ever, when the
    settle period is over and every pod still there has its eviction accepted (only their grace is left); the
    node's watch is then told that only deletions matter (PodApi.follow_node's `quiet`)."""
    due = deadline if isinstance(deadline, DrainDeadline) else DrainDeadline(deadline)
    return await _Drain(node, due, api, options, evictions, budgets or Budgets(), on_evicted, on_quiet).run()


class _Drain:
    """One drain's state: the pods still to go (`pending`, by UID: a re-created pod may reuse a name) and why."""

    def __init__(
        self,
        node: str,
        due: DrainDeadline,
        api: PodApi,
        options: DrainOptions,
        evictions: asyncio.Semaphore,
        budgets: Budgets,
        on_evicted: Callable[[Pod], None] | None = None,
        on_quiet: Callable[[], None] | None = None,
    ) -> None:
        self.due = due
        self.on_evicted = on_evicted
        self.on_quiet = on_quiet
        self.quiet = asyncio.Event() if on_quiet is not None else None
        self.settled_at = 0.0
        self.reported: set[str] = set()  # UIDs handed to on_evicted: one call per pod and drain
        self.api = api
        self.options = options
        self.evictions = evictions
        self.budgets = budgets
        self.number = next(_DRAINS)
        self.report = DrainReport(node)
        self.pending: dict[str, tuple[str, str]] = {}  # pod UID → (pod key, why it is not gone yet)
        self.working: set[str] = set()  # UIDs whose eviction or wait has not ended
        self.terminating: set[str] = set()  # UIDs of `working` past their eviction: waiting until they are gone
        self.removals: list[asyncio.Task[None]] = []
        self.arrived = asyncio.Event()
        self.ordinary: set[str] = set()  # UIDs of ordinary (not system-critical) pods whose removal has not ended
        self.critical_turn = asyncio.Event()  # set once the ordinary pods have gone: the critical tier may go
        self.group: asyncio.TaskGroup | None = None
        self.watcher: _Watcher | None = None
        self.may_complete = options.complete_admitted_evictions  # off once a delete for it is refused (403)

    async def run(self) -> DrainReport:
        loop = asyncio.get_running_loop()
        self.settled_at = settled_at = loop.time() + self.options.settle_seconds
        self.watcher = _Watcher(self._take, self._arrival)
        watch_task: asyncio.Task[None] | None = None
        settle_timer = loop.call_at(settled_at, self._check_quiet) if self.quiet is not None else None
        try:
            with self.due.on_move(lambda at: self.budgets.reorder(self.number, at)):
                async with self.due.timeout(), asyncio.TaskGroup() as group:
                    self.group = group
                    watch_task = group.create_task(
                        self.api.follow_node(
                            self.report.node, self.watcher.on_list, self.watcher.on_event, quiet=self.quiet
                        )
                    )
                    await self.watcher.listed.wait()  # the first look: its pods are taken (_take) by then
                    await self._settle(settled_at)
                    watch_task.cancel()
        except TimeoutError:
            # Only work still under way makes it a time-out: an empty node stays complete at the deadline; a node
            # whose pods could never be listed is not known to be empty.
            self.report.timed_out = bool(self.working) or not self.watcher.listed.is_set()
        finally:
            if settle_timer is not None:
                settle_timer.cancel()
            if watch_task is not None:
                watch_task.cancel()
        self.report.blocked.update(dict(self.pending.values()))
        return self.report

    async def _settle(self, settled_at: float) -> None:
        """Until every removal has ended and `settled_at` has passed with none under way."""
        loop = asyncio.get_running_loop()
        while True:
            running = [task for task in self.removals if not task.done()]
            if running:
                await asyncio.wait(running)
                continue
            left = settled_at - loop.time()
            if left <= 0:
                return
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.arrived.wait()

    def _check_quiet(self) -> None:
        """Quiet once the settle period is over and every pod still there is past its eviction."""
        if self.quiet is None or self.quiet.is_set() or self.watcher is None or not self.watcher.listed.is_set():
            return
        if asyncio.get_running_loop().time() < self.settled_at or not self.working <= self.terminating:
            return
        self.quiet.set()
        if self.on_quiet is not None:
            self.on_quiet()

    def _arrival(self, pod: Pod) -> None:
        log.info("pod bound to the node during its drain", extra={"node": self.report.node, "pod": pod.key})
        self._take([pod])
        self.arrived.set()

    def _take(self, pods: list[Pod]) -> None:
        assert self.group is not None and self.watcher is not None
        selection = select(pods, self.options)
        for pod in pods:
            self.watcher.seen(pod)
        self.report.skipped.extend(pod.key for pod in selection.skipped)
        # spotq's own pod, unless a DaemonSet's (IMDS mode: its controller would put it back on this node).
        self.report.protected.extend(
            pod for pod in selection.skipped if pod.key in self.options.protected and pod.controller_kind != "DaemonSet"
        )
        self.report.blocked.update({pod.key: reason for pod, reason in selection.refused})
        for pod in (*selection.evict, *selection.wait_only):
            self.watcher.gone(pod.uid)  # registered before any event about it can come
            self.pending[pod.uid] = (pod.key, "eviction not yet accepted")
            self.working.add(pod.uid)
            if not pod.critical:
                self.ordinary.add(pod.uid)
            self.removals.append(self.group.create_task(self._remove(pod, wait_only=pod in selection.wait_only)))
        self._open_critical_tier()

    def _open_critical_tier(self) -> None:
        if not self.ordinary and not self.critical_turn.is_set():
            self.critical_turn.set()

    async def _wait_for_critical_turn(self, pod: Pod) -> None:
        """A system-critical pod waits until the ordinary pods have gone, or the reserve before the deadline."""
        if self.critical_turn.is_set():
            return
        self._note(pod, "system-critical: waits for the other pods to leave first")
        with contextlib.suppress(TimeoutError):
            async with self.due.timeout(before=self.options.critical_reserve_seconds):
                await self.critical_turn.wait()

    def _note(self, pod: Pod, why: str) -> None:
        self.pending[pod.uid] = (pod.key, why)

    async def _remove(self, pod: Pod, wait_only: bool) -> None:
        try:
            await self._remove_once(pod, wait_only)
        finally:
            self.ordinary.discard(pod.uid)
            self._open_critical_tier()

    async def _remove_once(self, pod: Pod, wait_only: bool) -> None:
        assert self.watcher is not None
        if pod.critical and not wait_only:
            await self._wait_for_critical_turn(pod)
        result = "waiting" if wait_only else await self._evict(pod)
        if result == "refused":
            self.working.discard(pod.uid)
            return  # stays in `pending` with its reason
        if result in ("evicted", "forced"):
            self.report.evicted.append(pod.key)
            if self.on_evicted is not None and pod.uid not in self.reported:
                self.reported.add(pod.uid)
                self.on_evicted(pod)
        if result != "gone" and not pod.finished:
            self._note(pod, "terminating")
            self.terminating.add(pod.uid)
            self._check_quiet()
            await self.watcher.gone(pod.uid).wait()
        self.pending.pop(pod.uid, None)
        self.working.discard(pod.uid)
        self.terminating.discard(pod.uid)

    async def _evict(self, pod: Pod) -> Literal["evicted", "forced", "gone", "refused"]:
        """Evict (or, near the deadline if allowed, delete) until accepted; "refused" when it never can be."""
        window = self.options.force_delete_before_deadline_seconds
        budgets = self.budgets
        attempt = 0
        budget: BudgetKey | None = budgets.covering(pod.namespace, dict(pod.labels))
        blocker = ""  # what kept the last attempt from succeeding, for the report of a forced delete
        while True:
            try:
                if self.may_complete and budgets.admitted(budget, pod.name) and await self._complete_admitted(pod):
                    return "evicted"
                if window > 0 and attempt > 0 and self.due.seconds_left() <= window:
                    await self._delete(pod)
                    metrics.EVICTIONS.labels(result="force_deleted").inc()
                    self.report.forced[pod.key] = f"force-deleted before the deadline; {blocker}"
                    log.warning("pod force-deleted", extra={"node": self.report.node, "pod": pod.key, "why": blocker})
                    return "forced"
                if budget is not None:
                    self._note(pod, f"waiting for {_budget_name(budget)} to allow a disruption")
                async with contextlib.AsyncExitStack() as held:
                    turn = budgets.turn(budget, (self.due.at, self.number), BUDGET_PATIENCE_SECONDS)
                    if not await self._wait_for(turn, held, window):
                        # The force-delete time came while the budget had no room.
                        blocker = f"{_budget_name(budget)} allowed no disruption"
                        attempt += 1
                        continue
                    self._note(pod, "eviction not yet accepted")
                    async with self.evictions:
                        await self.api.evict(pod, clamp_grace(pod.grace_seconds, self.due.seconds_left()))
                metrics.EVICTIONS.labels(result="evicted").inc()
                return "evicted"
            except ApiError as exc:
                if exc.status in (404, 409):
                    metrics.EVICTIONS.labels(result="gone").inc()
                    return "gone"
                if exc.status == 500 and "more than one PodDisruptionBudget" in exc.body:
                    metrics.EVICTIONS.labels(result="multiple_pdbs").inc()
                    self._note(pod, "covered by more than one PodDisruptionBudget")
                    return "refused"  # the API server will never evict it: stop asking
                if exc.status == 429:
                    metrics.EVICTIONS.labels(result="pdb_blocked").inc()
                    refusing = _REFUSING_BUDGET.search(exc.body)
                    if refusing:
                        budget = (pod.namespace, refusing.group(1))
                    name = _budget_name(budget) if budget is not None else "a PodDisruptionBudget"
                    self._note(pod, f"{name} allows no disruption (429)")
                    blocker = f"{name} allowed no disruption"
                    if refusing and budgets.active:
                        # The budget's next status change is what to wait for: a short pause covers a watch that
                        # has not yet seen the refusal, then `turn` waits for room.
                        await self._pause(backoff(0, self.options, None), window)
                        attempt += 1
                        continue
                else:
                    metrics.EVICTIONS.labels(result="error").inc()
                    self._note(pod, f"eviction failed: {exc.status} {exc.reason}")
                    blocker = f"eviction failed: {exc.status} {exc.reason}"
                await self._pause(backoff(attempt, self.options, exc.retry_after), window)
            except SpotqError as exc:
                metrics.EVICTIONS.labels(result="error").inc()
                blocker = f"eviction failed: {exc}"[:200]
                self._note(pod, blocker)
                await self._pause(backoff(attempt, self.options, None), window)
            attempt += 1

    async def _delete(self, pod: Pod) -> None:
        """Delete the pod (UID precondition) with the grace an eviction would give it now."""
        async with self.evictions:
            await self.api.delete(pod, clamp_grace(pod.grace_seconds, self.due.seconds_left()))

    async def _complete_admitted(self, pod: Pod) -> bool:
        """The pod's budget admitted an eviction of it and the pod is still there: the request was cut off between
        the budget's update and the pod's deletion (a client timeout, a connection cut, an API server killed or
        spotq killed mid-request). Until the budget lets the entry go (two minutes), nothing can evict it, and the
        pod counts as disrupted anyway: delete it (UID precondition, the grace an eviction would give), the
        eviction's second half. False when spotq may not delete pods: it waits for the budget then."""
        try:
            await self._delete(pod)
        except ApiError as exc:
            if exc.status != 403:
                raise
            log.warning(
                "may not delete a pod whose eviction its budget admitted; waiting for the budget instead",
                extra={"node": self.report.node, "pod": pod.key, "hint": "grant delete on pods, or set "
                       "SPOTQ_DRAIN__COMPLETE_ADMITTED_EVICTIONS=false"},
            )  # fmt: skip
            self.may_complete = False  # not again in this drain
            return False
        metrics.EVICTIONS.labels(result="completed_admitted").inc()
        log.warning(
            "pod's eviction was admitted by its budget but the pod not deleted (a request cut off): deleted it",
            extra={"node": self.report.node, "pod": pod.key},
        )
        return True

    async def _wait_for(
        self, turn: AbstractAsyncContextManager[None], held: contextlib.AsyncExitStack, window: float
    ) -> bool:
        """Enter the budget's turn (held in `held` while the eviction runs); False if the force-delete time came
        first. Only the wait is bounded: once admitted, the eviction request runs to its answer."""
        if window <= 0:
            await held.enter_async_context(turn)
            return True
        try:
            async with self.due.timeout(before=window):
                await held.enter_async_context(turn)
        except TimeoutError:
            return False
        return True

    async def _pause(self, seconds: float, window: float) -> None:
        """Sleep between attempts, ending early when the force-delete time comes."""
        if window <= 0:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with self.due.timeout(before=window):
                await asyncio.sleep(seconds)


def _budget_name(budget: BudgetKey | None) -> str:
    return f"PodDisruptionBudget {budget[0]}/{budget[1]}" if budget is not None else "a PodDisruptionBudget"
