"""Run a plan's steps for one node: announce, mark (one idempotent PATCH), drain once, complete the hook.

One drain per node: in this process, a second notice joins the running drain; across queue-mode replicas (with
`replicas`), the drain is claimed on the node (owning.py) and a replica whose notice finds another live replica
draining the node waits for that drain's end, or takes it over when that replica's Lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from spotq import clock, draining, owning, planning, plans, records
from spotq.budgets import Budgets
from spotq.draining import DrainDeadline, DrainOptions, DrainReport
from spotq.errors import PermanentError, SpotqError, TransientError
from spotq.notices import LifecycleHook, Notice, StateChange
from spotq.observability import logs, metrics
from spotq.ports import (
    DrainRecord,
    DrainState,
    EventSink,
    LifecycleApi,
    NodeLookup,
    NodeMarks,
    NodeRef,
    NodeWriter,
    NoticeRecord,
    Pod,
    PodApi,
    PodEventSink,
    Replicas,
    VolumeAttachments,
)
from spotq.slots import DeadlineSlots

# In a wave of notices, taints go out before any drain or Event asks the API server for anything (each such
# request slows the taints still on their way); for at most this long, so a steady stream cannot hold drains back.
MARKS_FIRST_SECONDS = 5.0
# Two Events a node, the notice and the drain's end (not three: in a wave of hundreds each one is an API request);
# the end names a wait for a drain slot (drain.max_concurrent_nodes) from this long on.
SLOT_WAIT_REPORT_SECONDS = 1.0
# A replica waiting for another's drain stops waiting this long after its own notice's deadline: the drainer has had
# that long to record the drain's end, and the waiting message is then done (a drain past its deadline is over).
OWNER_RECORD_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class ActorConfig:
    prefix: str
    drain: DrainOptions
    heartbeat_seconds: float
    complete_delay_seconds: float = 0.0
    """SPOTQ_DRAIN__LIFECYCLE_COMPLETE_DELAY_SECONDS: a pause before completing a terminate hook, in its deadline."""
    evict_own_pod: bool = False
    """SPOTQ_DRAIN__EVICT_OWN_POD: once spotq's own node is drained, evict spotq's own pod so it is rescheduled."""


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
            await self._release(node, notice, log)
        returned = plan.find(plans.ReleaseOnReturn)
        if node is not None and isinstance(returned, plans.ReleaseOnReturn):
            await self._release_on_return(node, notice, returned.returned_at, log)
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
            async with _beside() as group:
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
                await self._wait_ready(node, due)
            else:
                await self._await_volumes(node, plan, due, log)
                await self._delay_completion(due, log)
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

    def abandoned(self, name: str) -> bool:
        """A drain of the node claimed by this replica stopped without recording its end."""
        return name in self._abandoned

    async def _release(self, node: NodeRef, notice: Notice, log: logs.Context) -> None:
        if node.name in self._drains:
            log.info("notice ended while its drain runs: marks kept")
            return
        released = await self._writer.release_for(node, notice.kind, notice.event_id or "")
        log.info("marks released: the notice ended" if released else "notice ended; no marks of its own to release")
        if released:
            await self._events.node_event(node, "NoticeEnded", f"{notice.kind.value} {notice.event_id} ended: released")

    async def _release_on_return(self, node: NodeRef, notice: Notice, returned_at: datetime, log: logs.Context) -> None:
        """A stopped or hibernated instance is back: its node's marks come off where every notice on record meant
        that stop and came before `returned_at` (planning.returned_from_stop, decided again on the node as it is
        when written). A drain of the node still running (it waits for pods of a stopped kubelet) ends first."""
        running = self._drains.get(node.name)
        if running is not None:
            log.info("instance returned while its drain runs: released once the drain ends")
            with contextlib.suppress(Exception):
                await asyncio.shield(running[0])

        def may_release(on_record: tuple[NoticeRecord, ...]) -> bool:
            return planning.returned_from_stop(on_record, returned_at)

        released = await self._writer.release_if(self._index.by_name(node.name) or node, may_release)
        if not released:
            log.info("instance returned; no marks of a stop alone to release")
            return
        log.info("marks released: the stopped instance returned")
        state = notice.state if isinstance(notice, StateChange) else ""
        await self._events.node_event(
            node,
            "NoticeEnded",
            f"instance {node.instance_id or ''} is {state} again since {returned_at.isoformat()}: the stop it was "
            "marked for is over; released",
        )

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
        here only once it is this replica's (see _own); None: another replica's drain of the node ended."""
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
            if self._replicas is None or await self._own(
                self._replicas, node, record or DrainRecord.of(node), due, hook, log, wait=wait
            ):
                self._abandoned.discard(node.name)
                try:
                    report = await self._drain(node, due, hook, log, self._evicted_note(node, plan, cause))
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

    async def _own(
        self,
        replicas: Replicas,
        node: NodeRef,
        record: DrainRecord,
        due: DrainDeadline,
        hook: LifecycleHook | None,
        log: logs.Context,
        *,
        wait: bool,
    ) -> bool:
        """True once the node's drain is this replica's to run: on record as its own, or claimed now (nobody live
        drains it). While another live replica drains it, wait (`wait`; else False at once) until that drain's
        end is on record (False: this notice shares its fate), or that replica's Lease expires (claim, then True).
        """
        loop = asyncio.get_running_loop()
        me = replicas.identity

        def alive(holder: str) -> bool:
            return owning.live(replicas.expires_at(holder), loop.time())

        waiting = False
        while True:
            step = owning.step(record, me, alive, waiting=waiting)
            if step is owning.Step.DRAIN:
                return True
            if step is owning.Step.ENDED:
                log.info("drain by another replica ended", extra={"drainer": record.drainer, "drain": record.state})
                return False
            if step is owning.Step.CLAIM:
                if not replicas.holding():
                    raise TransientError("this replica's Lease is not being renewed: it claims no drain")
                gone = record.drainer if record.state == owning.DRAIN_STARTED else None

                def may_claim(current: DrainRecord, waited: bool = waiting) -> bool:
                    return owning.step(current, me, alive, waiting=waited) is owning.Step.CLAIM

                record = await self._writer.claim_drain(self._index.by_name(node.name) or node, me, may_claim)
                if record.drainer == me and record.state == owning.DRAIN_STARTED:
                    if gone is not None:
                        log.info("drain taken over from a gone replica", extra={"from": gone})
                    return True
                continue  # another replica claimed it first: decide again on what the node now says
            if not wait:
                return False
            if not waiting:
                log.info("another replica drains the node: waiting for it", extra={"drainer": record.drainer})
            waiting = True
            async with _beside() as group:
                beats = group.create_task(self._heartbeats(hook, log)) if hook else None
                found = await self._await_owner(replicas, node.name, record, due)
                if beats is not None:
                    beats.cancel()
            if found is None:
                log.warning("gave up waiting for another replica's drain: the deadline passed")
                return False
            record = found

    async def _await_owner(
        self, replicas: Replicas, name: str, record: DrainRecord, due: DrainDeadline
    ) -> DrainRecord | None:
        """Wait until the node's record says something new about the drain `record.drainer` runs (owning.news), or
        that replica's Lease expires (then `record` again: it is now a gone replica's). None: our own deadline
        passed, with OWNER_RECORD_GRACE_SECONDS for the drainer to record its end."""
        owner = record.drainer or ""
        loop = asyncio.get_running_loop()

        def current() -> DrainRecord:
            found = self._index.by_name(name)
            return DrainRecord.of(found) if found is not None else DrainRecord()

        def news() -> bool:
            return owning.news(current(), owner)

        while True:
            now = loop.time()
            give_up = due.at + OWNER_RECORD_GRACE_SECONDS
            if news():
                return current()
            expires = replicas.expires_at(owner)
            if expires is not None and expires <= now:
                return record
            if now >= give_up:
                return None
            # Renewals wake nobody: at the expiry seen now, look again (renewed meanwhile: wait on).
            until = give_up if expires is None else min(give_up, expires)
            await _first_of(self._index.wait_for(news), replicas.changed(), until=until)

    async def _fence(self, replicas: Replicas, name: str) -> None:
        """Raise once this replica may no longer drain the node: its own Lease may look expired to the others, or
        the node's record names another drainer (it took the drain over). The drain stops; its message is retried
        and finds out who drains the node now."""
        me = replicas.identity

        def taken() -> bool:
            found = self._index.by_name(name)
            return found is not None and found.drainer not in (None, me)

        await _first_of(replicas.lost(), self._index.wait_for(taken), until=None)
        raise TransientError(
            "stopped draining: "
            + ("another replica took the drain over" if taken() else "this replica's Lease was not renewed in time")
        )

    async def _out_of_service(self, node: NodeRef, step: plans.OutOfService, log: logs.Context) -> None:
        """The out-of-service taint once the node is drained: its volumes detach without the 6-minute wait."""
        taint = NodeMarks(taints=((step.key, step.value, "NoExecute"),))
        changed, _ = await self._writer.mark(self._index.by_name(node.name) or node, taint)
        log.info("node tainted out-of-service" if changed else "node already out-of-service")

    async def _await_volumes(self, node: NodeRef | None, plan: plans.Plan, due: float, log: logs.Context) -> None:
        """Before a terminate hook completes: until no volume is attached to the node, within the plan's deadline."""
        if self._volumes is None or node is None or not plan.drains:
            return
        try:
            async with asyncio.timeout_at(due):
                known = await self._volumes.wait_detached(node.name)
        except TimeoutError:
            log.warning("volumes still attached at the deadline: completing the lifecycle action")
            return
        log.info("node's volumes detached" if known else "node's volume attachments unknown: not waiting")

    async def _delay_completion(self, due: float, log: logs.Context) -> None:
        """SPOTQ_DRAIN__LIFECYCLE_COMPLETE_DELAY_SECONDS before a terminate hook completes, never past the plan's
        deadline."""
        delay = self._config.complete_delay_seconds
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        until = min(loop.time() + delay, due)
        if until > loop.time():
            log.info("completing the lifecycle action after a delay", extra={"seconds": round(until - loop.time(), 1)})
            await asyncio.sleep(until - loop.time())

    def _evicted_note(self, node: NodeRef, plan: plans.Plan, cause: str) -> Callable[[Pod], None] | None:
        """What the drain calls for each pod it evicted: an EvictedBySpotq Event on the pod, sent beside the drain
        (queued last for the rate limit); None when pod Events are off."""
        sink = self._pod_events
        if sink is None:
            return None
        message = f"evicted by spotq from node {node.name}: {cause or 'a notice'}, deadline {plan.deadline.isoformat()}"

        def note(pod: Pod) -> None:
            task = asyncio.get_running_loop().create_task(sink.pod_event(pod, "EvictedBySpotq", message))
            self._pod_event_tasks.add(task)
            task.add_done_callback(self._pod_event_tasks.discard)

        return note

    async def _drain(
        self,
        node: NodeRef,
        deadline: DrainDeadline,
        hook: LifecycleHook | None,
        log: logs.Context,
        on_evicted: Callable[[Pod], None] | None = None,
    ) -> DrainReport:
        loop = asyncio.get_running_loop()
        await self._after_marks()
        asked = loop.time()
        async with self._drain_slots.hold(deadline.at):
            started = loop.time()
            metrics.DRAINS_IN_FLIGHT.inc()
            try:
                async with _beside() as group:
                    beats = group.create_task(self._heartbeats(hook, log)) if hook else None
                    fence = group.create_task(self._fence(self._replicas, node.name)) if self._replicas else None
                    report = await draining.drain(
                        node.name,
                        deadline,
                        self._pods,
                        self._config.drain,
                        self._evictions,
                        self._budgets,
                        on_evicted=on_evicted,
                    )
                    for side in (beats, fence):
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
            await self._events.node_event(
                node, "DrainFinished", f"evicted {len(report.evicted)} pods in {duration:.1f}s{waited}{note}"
            )
        else:
            blockers = "; ".join(f"{pod}: {why}" for pod, why in sorted(report.blocked.items()))
            log.warning("drain incomplete", extra={**fields, "timed_out": report.timed_out, "blockers": blockers})
            await self._events.node_event(
                node,
                "DrainTimedOut" if report.timed_out else "DrainBlocked",
                f"{len(report.blocked)} pods not drained{waited}: {blockers}{note}",
                warning=True,
            )
        state: DrainState = "finished" if report.complete else ("timed-out" if report.timed_out else "blocked")
        fresh = self._index.by_name(node.name) or node
        await self._writer.record_drain(fresh, state)
        if report.complete:
            _remember(self._drained, node.uid)
        if report.protected and self._config.evict_own_pod:
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
                await self._pods.evict(pod, None)
            except SpotqError as exc:
                error = str(exc)[:300]
                context.warning("could not evict spotq's own pod from its drained node", extra={"error": error})
                continue
            context.warning("spotq's own node was drained: evicted spotq's own pod to be rescheduled elsewhere")
            await self._announce(node, "SpotqRescheduled", f"spotq's own pod {pod.key} evicted to run elsewhere")

    async def _after_marks(self) -> None:
        """Wait (bounded) until no node is being marked: see MARKS_FIRST_SECONDS."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MARKS_FIRST_SECONDS):
                await self._marked.wait()

    async def _announce(self, node: NodeRef, reason: str, message: str) -> None:
        await self._after_marks()
        await self._events.node_event(node, reason, message)

    async def _heartbeats(self, hook: LifecycleHook, log: logs.Context) -> None:
        lifecycle = self._lifecycle
        while lifecycle is not None:
            await asyncio.sleep(self._config.heartbeat_seconds)
            try:
                await lifecycle.heartbeat(hook)
            except Exception as exc:
                log.warning("lifecycle heartbeat failed", extra={"error": str(exc)[:200]})

    async def _wait_ready(self, node: NodeRef | None, due: float) -> None:
        """A launch hook completes once its node is Ready; held (message in flight) until the plan's deadline,
        which the launch wait puts shortly before the hook's own timeout."""
        name = node.name if node else None
        if name is None:
            raise PermanentError("launch hook: the new instance is not a node of this cluster")

        def ready() -> bool:
            current = self._index.by_name(name)
            return current is not None and current.ready

        try:
            async with asyncio.timeout_at(due):
                await self._index.wait_for(ready)
        except TimeoutError:
            raise PermanentError(
                f"launch hook: node {name} not Ready within SPOTQ_POLICY__LAUNCH_WAIT_SECONDS; the hook's own "
                "timeout decides"
            ) from None


async def _first_of(*waits: Coroutine[Any, Any, object], until: float | None) -> None:
    """Wait until the first of `waits` returns, or loop time `until` (None: no limit); the others are cancelled."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(wait) for wait in waits]
        try:
            async with asyncio.timeout_at(until):
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        for task in tasks:
            task.cancel()


@contextlib.asynccontextmanager
async def _beside() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup for side tasks (Events, heartbeats) next to the main work, whose own exception comes out as
    itself rather than wrapped in an ExceptionGroup, so the handler still tells transient from permanent."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as error:
        if len(error.exceptions) == 1:
            raise error.exceptions[0] from None
        raise


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
