"""Run a plan's steps for one node: release (unmarking.py), mark (one idempotent PATCH) and announce, drain once,
complete the hook (hooks.py).

One drain per node: in this process, a second notice joins the running drain (drain_runs.py runs it); across
queue-mode replicas (with `replicas`), whose drain it is is settled first (handover.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from spotq import clock, drain_runs, handover, hooks, planning, plans, records, unmarking
from spotq.budgets import Budgets
from spotq.draining import DrainDeadline, DrainOptions, DrainReport
from spotq.errors import TransientError
from spotq.notices import LifecycleHook, Notice
from spotq.observability import logs, metrics
from spotq.ports import (
    DrainRecord,
    EventSink,
    LifecycleApi,
    NodeLookup,
    NodeMarks,
    NodeRef,
    NodeWriter,
    NoticeRecord,
    PodApi,
    PodEventSink,
    Replicas,
    VolumeAttachments,
)
from spotq.side_tasks import beside
from spotq.slots import DeadlineSlots

# In a wave of notices, taints go out before any drain or Event asks the API server for anything (each such
# request slows the taints still on their way); for at most this long, so a steady stream cannot hold drains back.
MARKS_FIRST_SECONDS = 5.0


@dataclass(frozen=True)
class ActorConfig:
    prefix: str
    drain: DrainOptions
    heartbeat_seconds: float
    complete_delay_seconds: float = 0.0
    """SPOTQ_DRAIN__LIFECYCLE_COMPLETE_DELAY_SECONDS: a pause before completing a terminate hook, in its deadline."""
    evict_own_pod: bool = False
    """SPOTQ_DRAIN__EVICT_OWN_POD: once spotq's own node is drained, evict spotq's own pod so it is rescheduled."""
    release_slot_when_quiet: bool = False
    """SPOTQ_DRAIN__SHARED_GRACE_WATCH: a drain gives its slot up once only its pods' grace is left."""


class Actor:
    def __init__(
        self,
        *,
        writer: NodeWriter,
        pods: PodApi,
        events: EventSink,
        lifecycle: LifecycleApi | None,
        index: NodeLookup,
        config: ActorConfig,
        drain_slots: DeadlineSlots,
        evictions: asyncio.Semaphore,
        budgets: Budgets | None = None,
        replicas: Replicas | None = None,
        pod_events: PodEventSink | None = None,
        volumes: VolumeAttachments | None = None,
    ) -> None:
        self._writer = writer
        self._volumes = volumes  # SPOTQ_DRAIN__WAIT_FOR_VOLUME_DETACH; None: off
        # An Event on each evicted pod (SPOTQ_DRAIN__POD_EVENTS; None: off), sent beside the drain, never awaited
        # by it: the tasks are held here until they end.
        self._pod_events = pod_events
        self._pod_event_tasks: set[asyncio.Task[None]] = set()
        self._pods = pods
        self._events = events
        self._lifecycle = lifecycle
        self._index = index
        self._config = config
        self._drain_slots = drain_slots
        self._evictions = evictions
        self._budgets = budgets
        self._replicas = replicas
        # A node's drain handled by this process (run here, or awaited from another replica): node name → result.
        self._drains: dict[str, tuple[asyncio.Future[DrainReport | None], DrainDeadline, bool]] = {}
        # Drains this replica claimed and that stopped without an end on record (an error, its Lease lost): node
        # names, for resuming.take_over to start again, since the other replicas wait on a live claim.
        self._abandoned: set[str] = set()
        # What this process did, for the moments before the index shows spotq's own writes (node UID → ...).
        self._drained: OrderedDict[str, None] = OrderedDict()
        self._announced: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._marking = 0
        self._marked = asyncio.Event()
        self._marked.set()

    async def act(
        self,
        plan: plans.Plan,
        notice: Notice,
        node: NodeRef | None,
        received: clock.Instant | float,
        log: logs.Context,
    ) -> DrainReport | None:
        """Run `plan` for `node`. `received`: the instant the notice was received at, from which the plan's
        deadline becomes loop time (a wall-clock step meanwhile does not move it); a bare loop time is taken as
        that instant read now on the wall clock."""
        instant = received if isinstance(received, clock.Instant) else _instant_at(received)
        due = instant.loop_time(plan.deadline)
        received_loop_time = instant.loop
        report: DrainReport | None = None
        complete = plan.find(plans.CompleteLifecycle)
        # A terminate hook waits on the drain: heartbeats keep it from timing out meanwhile.
        hook = complete.hook if isinstance(complete, plans.CompleteLifecycle) and not complete.when_node_ready else None
        if node is not None and plan.find(plans.Release):
            await unmarking.release_ended(self._writer, self._events, node, notice, node.name in self._drains, log)
        returned = plan.find(plans.ReleaseOnReturn)
        if node is not None and isinstance(returned, plans.ReleaseOnReturn):
            running = self._drains.get(node.name)
            await unmarking.release_returned(
                self._writer,
                self._events,
                self._index,
                node,
                notice,
                returned.returned_at,
                running[0] if running is not None else None,
                log,
            )
        if node is not None:
            marks = self._marks(plan, notice)
            record: DrainRecord | None = None
            if marks is not None:
                # Marks first: every request ahead of the taint is time the scheduler can still place pods here.
                self._marking += 1
                self._marked.clear()
                try:
                    changed, record = await self._writer.mark(node, marks)
                finally:
                    self._marking -= 1
                    if self._marking == 0:
                        self._marked.set()
                metrics.RECEIPT_TO_TAINT.observe(asyncio.get_running_loop().time() - received_loop_time)
                log.info("node marked" if changed else "node already marked", extra={"steps": plan.step_names})
            async with beside() as group:
                # Events are for people: the drain does not wait for them (they queue last for the rate limit).
                if plan.find(plans.Announce) and self._first_sighting(node, notice):
                    group.create_task(self._announce(node, "InterruptionNotice", _describe(notice, plan)))
                if plan.drains:
                    if self._already_drained(node):
                        # A redelivery, or another notice for a drained node: nothing is left to drain.
                        log.info("node already drained")
                    else:
                        cause = f"{notice.kind.value} notice {notice.event_id}"
                        report = await self._drain_once(
                            node, plan, hook, log, record=record, cause=cause, deadline_at=due
                        )
        if isinstance(complete, plans.CompleteLifecycle) and self._lifecycle is not None:
            if complete.when_node_ready:
                await hooks.wait_ready(self._index, node, due)
            else:
                await hooks.await_volumes(self._volumes, node, plan, due, log)
                await hooks.delay_completion(self._config.complete_delay_seconds, due, log)
            await self._lifecycle.complete(complete.hook)
            metrics.LIFECYCLE_COMPLETIONS.labels(result="continue").inc()
            log.info("lifecycle action completed", extra={"hook": complete.hook.hook_name})
        return report

    async def resume(self, node: NodeRef, deadline: datetime, log: logs.Context) -> DrainReport | None:
        """Run again a drain that a stopped spotq (or a gone replica) left unfinished (the node's record says so);
        the notices' messages, when SQS hands them back, join it. The node already carries its marks. None: another
        live replica drains the node, or its drain ended meanwhile."""
        plan = plans.Plan((plans.Drain(),), deadline)
        return await self._drain_once(node, plan, None, log, wait=False, cause="a drain resumed from the node's record")

    def handling(self, name: str) -> bool:
        """This process drains the node now, or waits for another replica's drain of it."""
        return name in self._drains

    def draining(self) -> bool:
        """Any drain runs in this process (or waits for another replica's)."""
        return bool(self._drains)

    def abandoned(self, name: str) -> bool:
        """A drain of the node claimed by this replica stopped without recording its end."""
        return name in self._abandoned

    def _first_sighting(self, node: NodeRef, notice: Notice) -> bool:
        """True once per notice and node: not when the node's record already names it (a redelivery, or a
        restarted spotq), nor when this process announced it already."""
        key = (node.uid, notice.kind.value, notice.event_id or "")
        recorded = node.record(notice.kind)
        if key in self._announced or (recorded is not None and recorded.id == notice.event_id):
            return False
        _remember(self._announced, key)
        return True

    def _already_drained(self, node: NodeRef) -> bool:
        """The node's record (or this process) says a drain of it finished. A drain that started and did not finish
        (spotq stopped) or timed out is run again: what is left on the node is what still needs to go."""
        if node.name in self._drains:
            return False  # running: join it
        return node.uid in self._drained or node.drain_state == records.DRAIN_FINISHED

    def _marks(self, plan: plans.Plan, notice: Notice) -> NodeMarks | None:
        if not plan.marks_node:
            return None
        value = _label_value(notice.event_id or "")
        return NodeMarks(
            taints=tuple((step.key, value, step.effect) for step in plan.steps if isinstance(step, plans.Taint)),
            cordon=plan.find(plans.Cordon) is not None,
            exclude_from_load_balancers=plan.find(plans.ExcludeFromLoadBalancers) is not None,
            record=NoticeRecord(
                notice.kind,
                notice.event_id,
                deadline=plan.deadline,
                noticed_at=clock.now(),
                detail=planning.record_detail(notice),
            ),
            drain_started=plan.drains,
            overrides_detail=planning.overrides_stop(notice),
            # The mark that records a drain's start claims it for this replica: no request of its own.
            drainer=self._replicas.identity if self._replicas is not None and plan.drains else None,
        )

    async def _drain_once(
        self,
        node: NodeRef,
        plan: plans.Plan,
        hook: LifecycleHook | None,
        log: logs.Context,
        *,
        record: DrainRecord | None = None,
        wait: bool = True,
        cause: str = "",
        deadline_at: float | None = None,
    ) -> DrainReport | None:
        """One drain per node: a second notice for a node being drained waits for the running drain, bringing its
        deadline forward if its own is earlier (a state change after a Spot warning). With replicas, the drain runs
        here only once it is this replica's (handover.own); None: another replica's drain of the node ended."""
        # In loop time, from the notice's receipt (`deadline_at`), or from now for a drain resumed from a record.
        deadline = deadline_at if deadline_at is not None else clock.loop_deadline(plan.deadline)
        running = self._drains.get(node.name)
        if running is not None:
            joined, due, waits = running
            moved = due.move_earlier(deadline)
            log.info("drain already running, joining it", extra={"deadline_moved_earlier": moved})
            result = await asyncio.shield(joined)
            if result is None and wait and not waits:
                # It found another replica draining the node and did not wait: this notice does.
                return await self._drain_once(node, plan, hook, log, wait=True, cause=cause, deadline_at=deadline)
            return result
        future: asyncio.Future[DrainReport | None] = asyncio.get_running_loop().create_future()
        due = DrainDeadline(deadline)
        self._drains[node.name] = (future, due, wait)
        report: DrainReport | None = None
        try:
            beats = self._beats(hook, log)
            if self._replicas is None or await handover.own(
                self._replicas,
                self._writer,
                self._index,
                node,
                record or DrainRecord.of(node),
                due,
                beats,
                log,
                wait=wait,
            ):
                self._abandoned.discard(node.name)
                try:
                    on_evicted = drain_runs.evicted_note(self._pod_events, self._pod_event_tasks, node, plan, cause)
                    report = await self._run().run(node, due, beats, log, on_evicted)
                    out_of_service = plan.find(plans.OutOfService)
                    if report.complete and isinstance(out_of_service, plans.OutOfService):
                        await self._out_of_service(node, out_of_service, log)
                except BaseException:
                    if self._replicas is not None:
                        self._abandoned.add(node.name)
                    raise
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else TransientError("drain cancelled"))
            future.exception()  # retrieved: joiners re-raise it, nobody else must
            raise
        finally:
            del self._drains[node.name]
        future.set_result(report)
        return report

    def _run(self) -> drain_runs.DrainRun:
        """A drain run with this Actor's parts as they are now."""
        return drain_runs.DrainRun(
            pods=self._pods,
            events=self._events,
            writer=self._writer,
            index=self._index,
            slots=self._drain_slots,
            evictions=self._evictions,
            budgets=self._budgets,
            options=self._config.drain,
            evict_own_pod=self._config.evict_own_pod,
            release_slot_when_quiet=self._config.release_slot_when_quiet,
            replicas=self._replicas,
            after_marks=self._after_marks,
            announce=self._announce,
            finished=lambda drained: _remember(self._drained, drained.uid),
        )

    def _beats(self, hook: LifecycleHook | None, log: logs.Context) -> handover.Beats | None:
        """Heartbeats on a terminate hook, while it waits on the drain (None: no hook)."""
        if hook is None:
            return None
        return lambda: hooks.heartbeats(self._lifecycle, hook, self._config.heartbeat_seconds, log)

    async def _out_of_service(self, node: NodeRef, step: plans.OutOfService, log: logs.Context) -> None:
        await hooks.out_of_service(self._writer, self._index, node, step, log)

    async def _after_marks(self) -> None:
        """Wait (bounded) until no node is being marked: see MARKS_FIRST_SECONDS."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MARKS_FIRST_SECONDS):
                await self._marked.wait()

    async def _announce(self, node: NodeRef, reason: str, message: str) -> None:
        await self._after_marks()
        await self._events.node_event(node, reason, message)


# Bounded memories: a long-running process sees many nodes and notices come and go.
_REMEMBERED = 10_000


def _remember(memory: OrderedDict[Any, None], key: Any) -> None:
    memory[key] = None
    memory.move_to_end(key)
    while len(memory) > _REMEMBERED:
        memory.popitem(last=False)


def _instant_at(loop_time: float) -> clock.Instant:
    """The instant at loop time `loop_time` (in the past), its wall time read back from the wall clock now."""
    return clock.Instant(clock.now() - timedelta(seconds=clock.loop_now() - loop_time), loop_time)


def _describe(notice: Notice, plan: plans.Plan) -> str:
    return (
        f"{notice.kind.value} notice {notice.event_id} for {', '.join(notice.instance_ids)}; "
        f"steps: {', '.join(plan.step_names)}; deadline {plan.deadline.isoformat()}"
    )


def _label_value(value: str) -> str:
    """Taint values follow label-value syntax: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63]
    return cleaned.strip("-_.")
