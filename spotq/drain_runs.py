"""One run of a node's drain (draining.drain) with what goes around it: a drain slot, heartbeats and fencing beside
it, its metrics, the Event that closes it, its end on the node's record, an Event on each evicted pod, and spotq's
own pod leaving a node drained of everything else."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from spotq import draining, handover, plans
from spotq.budgets import Budgets
from spotq.draining import DrainDeadline, DrainOptions, DrainReport
from spotq.errors import SpotqError
from spotq.observability import logs, metrics
from spotq.ports import DrainState, EventSink, NodeLookup, NodeRef, NodeWriter, Pod, PodApi, PodEventSink, Replicas
from spotq.side_tasks import beside
from spotq.slots import DeadlineSlots

# Two Events a node, the notice and the drain's end (not three: in a wave of hundreds each one is an API request);
# the end names a wait for a drain slot (drain.max_concurrent_nodes) from this long on.
SLOT_WAIT_REPORT_SECONDS = 1.0


@dataclass(frozen=True)
class DrainRun:
    """What a node's drain runs with: the Actor's parts, as they are when the drain starts."""

    pods: PodApi
    events: EventSink
    writer: NodeWriter
    index: NodeLookup
    slots: DeadlineSlots
    evictions: asyncio.Semaphore
    budgets: Budgets | None
    options: DrainOptions
    evict_own_pod: bool
    release_slot_when_quiet: bool
    """Give the drain slot up once only the pods' grace is left (draining's `on_quiet`)."""
    replicas: Replicas | None
    after_marks: Callable[[], Awaitable[None]]
    """Waits (bounded) until no node is being marked: marks go out first."""
    announce: Callable[[NodeRef, str, str], Awaitable[None]]
    """A node Event, sent after the marks."""
    finished: Callable[[NodeRef], None]
    """Called once a drain of the node is complete and on record."""

    async def run(
        self,
        node: NodeRef,
        deadline: DrainDeadline,
        beats: handover.Beats | None,
        log: logs.Context,
        on_evicted: Callable[[Pod], None] | None = None,
    ) -> DrainReport:
        loop = asyncio.get_running_loop()
        await self.after_marks()
        asked = loop.time()
        async with self.slots.hold(deadline.at) as release:
            started = loop.time()
            metrics.DRAINS_IN_FLIGHT.inc()
            try:
                async with beside() as group:
                    heartbeats = group.create_task(beats()) if beats else None
                    fence = (
                        group.create_task(handover.fence(self.replicas, self.index, node.name))
                        if self.replicas
                        else None
                    )
                    report = await draining.drain(
                        node.name,
                        deadline,
                        self.pods,
                        self.options,
                        self.evictions,
                        self.budgets,
                        on_evicted=on_evicted,
                        on_quiet=release if self.release_slot_when_quiet else None,
                    )
                    for side in (heartbeats, fence):
                        if side is not None:
                            side.cancel()
            finally:
                metrics.DRAINS_IN_FLIGHT.dec()
        duration, queued = loop.time() - started, started - asked
        result = "complete" if report.complete else ("timed_out" if report.timed_out else "blocked")
        metrics.DRAIN_DURATION.labels(result=result).observe(duration)
        fields: dict[str, object] = {
            "evicted": len(report.evicted),
            "blocked": len(report.blocked),
            "seconds": round(duration, 2),
            "queued_seconds": round(queued, 2),
        }
        # The notice's Event announced the drain; this one closes it (and says if it had to queue for a slot).
        waited = f" after waiting {queued:.0f}s for a drain slot" if queued >= SLOT_WAIT_REPORT_SECONDS else ""
        forced = "; ".join(f"{pod}: {why}" for pod, why in sorted(report.forced.items()))
        if forced:
            fields["forced"] = forced
        note = f" ({len(report.forced)} force-deleted: {forced})" if forced else ""
        if report.complete:
            log.info("drain finished", extra=fields)
            await self.events.node_event(
                node, "DrainFinished", f"evicted {len(report.evicted)} pods in {duration:.1f}s{waited}{note}"
            )
        else:
            blockers = "; ".join(f"{pod}: {why}" for pod, why in sorted(report.blocked.items()))
            log.warning("drain incomplete", extra={**fields, "timed_out": report.timed_out, "blockers": blockers})
            await self.events.node_event(
                node,
                "DrainTimedOut" if report.timed_out else "DrainBlocked",
                f"{len(report.blocked)} pods not drained{waited}: {blockers}{note}",
                warning=True,
            )
        state: DrainState = "finished" if report.complete else ("timed-out" if report.timed_out else "blocked")
        fresh = self.index.by_name(node.name) or node
        await self.writer.record_drain(fresh, state)
        if report.complete:
            self.finished(node)
        if report.protected and self.evict_own_pod:
            await self._leave(node, report.protected, log)
        return report

    async def _leave(self, node: NodeRef, own: list[Pod], log: logs.Context) -> None:
        """spotq's own node is going and everything else on it has been dealt with: evict spotq's own pod, so its
        controller starts the replacement on another node now rather than after the node is gone. SIGTERM then
        hands this process's messages back and its Lease over (see app.run); the replacement, or another replica,
        resumes the drains from the nodes' records."""
        for pod in own:
            context = log.bind(pod=pod.key)
            try:
                await self.pods.evict(pod, None)
            except SpotqError as exc:
                error = str(exc)[:300]
                context.warning("could not evict spotq's own pod from its drained node", extra={"error": error})
                continue
            context.warning("spotq's own node was drained: evicted spotq's own pod to be rescheduled elsewhere")
            await self.announce(node, "SpotqRescheduled", f"spotq's own pod {pod.key} evicted to run elsewhere")


def evicted_note(
    sink: PodEventSink | None, tasks: set[asyncio.Task[None]], node: NodeRef, plan: plans.Plan, cause: str
) -> Callable[[Pod], None] | None:
    """What the drain calls for each pod it evicted: an EvictedBySpotq Event on the pod, sent beside the drain
    (queued last for the rate limit; the task held in `tasks` until it ends); None when pod Events are off."""
    if sink is None:
        return None
    message = f"evicted by spotq from node {node.name}: {cause or 'a notice'}, deadline {plan.deadline.isoformat()}"

    def note(pod: Pod) -> None:
        task = asyncio.get_running_loop().create_task(sink.pod_event(pod, "EvictedBySpotq", message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return note
