"""The one handler both sources feed: a notice → resolve each instance → scope → plan → dry run → act → outcome.

The queue source hands it message bodies (`handle`: parse first); the IMDS source hands it notices it parsed from
the metadata documents (`handle_notice`). What the outcome means for the message is acknowledging's business.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Literal, Protocol

from spotq import clock, notices, parsing, planning
from spotq.acknowledging import Outcome, combine
from spotq.errors import PermanentError, TransientError
from spotq.notices import Delivery, InstanceId, Notice
from spotq.observability import logs, metrics
from spotq.plans import Plan
from spotq.ports import NodeRef
from spotq.resolving import Resolution, Resolve

log = logs.get("spotq.handling")


class Acting(Protocol):
    async def act(
        self, plan: Plan, notice: Notice, node: NodeRef | None, received: clock.Instant, log: logs.Context
    ) -> object: ...


# Remember this many instances already reported as unknown, so each is logged once, not once per redelivery.
_SEEN_UNKNOWN = 10_000


class Handler:
    def __init__(
        self,
        *,
        resolver: Resolve,
        actor: Acting,
        policy: planning.Policy,
        unknown_instance_fate: Literal["delete", "release"],
        dry_run: bool,
    ) -> None:
        self._resolver = resolver
        self._actor = actor
        self._policy = policy
        self._unknown_fate = unknown_instance_fate
        self._dry_run = dry_run
        self._unknown_logged: OrderedDict[InstanceId, None] = OrderedDict()

    async def handle(self, delivery: Delivery) -> tuple[Notice, Outcome]:
        received = clock.instant()
        notice = parsing.parse(delivery.body)
        metrics.MESSAGES_RECEIVED.labels(kind=notice.kind.value).inc()
        if notice.event_time is not None:
            age = (received.wall - notice.event_time).total_seconds()
            metrics.MESSAGE_AGE.labels(kind=notice.kind.value).observe(max(age, 0.0))
        context = log.bind(kind=notice.kind.value, notice_id=notice.event_id, message_id=delivery.message_id)
        if isinstance(notice, notices.Malformed):
            context.warning("malformed message", extra={"reason": notice.reason, "body": _excerpt(delivery.body)})
            return notice, Outcome.MALFORMED
        if isinstance(notice, notices.Ignored):
            context.info("ignored message", extra={"reason": notice.reason, "body": _excerpt(delivery.body)})
            return notice, Outcome.IGNORED
        if isinstance(notice, notices.TestNotification):
            context.info("auto scaling test notification")
            return notice, Outcome.TEST_NOTIFICATION
        return notice, await self.handle_notice(notice, received, context)

    async def handle_notice(
        self, notice: Notice, received: clock.Instant, context: logs.Context | None = None
    ) -> Outcome:
        """Act on a typed notice for each instance it names; the most cautious outcome is the notice's. Its
        deadlines are measured from `received`, the one instant it was received at."""
        context = context or log.bind(kind=notice.kind.value, notice_id=notice.event_id, source=notice.source)
        context.info("notice received", extra={"instances": ",".join(notice.instance_ids)})
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._instance(notice, instance_id, received, context))
                for instance_id in notice.instance_ids
            ]
        return combine([task.result() for task in tasks])

    async def _instance(
        self,
        notice: Notice,
        instance_id: InstanceId,
        received: clock.Instant,
        context: logs.Context,
    ) -> Outcome:
        context = context.bind(instance=instance_id)
        try:
            if isinstance(notice, notices.LifecycleTerminate | notices.LifecycleLaunch) and not (
                planning.hook_group_ours(notice.hook.group_name, self._policy)
            ):
                self._log_unknown(instance_id, "hook's group is not in SPOTQ_POLICY__LIFECYCLE_GROUPS", context)
                return Outcome.OUT_OF_SCOPE
            plan = planning.plan(notice, self._policy, received.wall)
            if not plan.steps:
                context.info("no action for this notice")
                return Outcome.NO_ACTION
            resolution = await self._resolver.resolve(instance_id)
            if isinstance(notice, notices.LifecycleLaunch) and resolution.node is None:
                joined = await self._await_launch(instance_id, plan, received, context)
                if joined is None:
                    return Outcome.FAILED
                resolution = joined
            node = resolution.node
            if node is not None:
                context = context.bind(node=node.name)
            if node is None or not resolution.in_scope:
                # Not provably ours: touch nothing (another cluster's terminate hook waits for its own handler).
                self._log_unknown(instance_id, resolution.why, context)
                return Outcome.UNKNOWN_INSTANCE if node is None else Outcome.OUT_OF_SCOPE
            if self._dry_run:
                context.info("dry run: would act", extra={"steps": plan.step_names})
                return Outcome.DRY_RUN
            await self._actor.act(plan, notice, node, received, context)
            return Outcome.DONE
        except PermanentError as exc:
            context.warning("notice failed for good", extra={"error": str(exc)[:300]})
            return Outcome.FAILED
        except TransientError as exc:
            context.warning("notice will be retried", extra={"error": str(exc)[:300]})
            return Outcome.TRANSIENT

    async def _await_launch(
        self, instance_id: InstanceId, plan: Plan, received: clock.Instant, context: logs.Context
    ) -> Resolution | None:
        """A launch hook arrives before its node joins (that takes minutes): hold the message in flight, its
        visibility extended, instead of handing it back (each redelivery brings it closer to the DLQ)."""
        context.info(
            "launch hook: waiting for the instance to join as a node", extra={"until": plan.deadline.isoformat()}
        )
        try:
            async with asyncio.timeout_at(received.loop_time(plan.deadline)):
                await self._resolver.joined(instance_id)
        except TimeoutError:
            context.warning(
                "launch hook: the instance did not join before SPOTQ_POLICY__LAUNCH_WAIT_SECONDS; "
                "the hook's own timeout decides"
            )
            return None
        return await self._resolver.resolve(instance_id)

    def _log_unknown(self, instance_id: InstanceId, why: str, context: logs.Context) -> None:
        if instance_id in self._unknown_logged:
            return
        self._unknown_logged[instance_id] = None
        if len(self._unknown_logged) > _SEEN_UNKNOWN:
            self._unknown_logged.popitem(last=False)
        context.info("instance not acted on", extra={"why": why})


def _excerpt(body: str) -> str:
    return body[:200] + ("…" if len(body) > 200 else "")
