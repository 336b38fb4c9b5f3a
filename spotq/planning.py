"""(notice, policy, receipt time) → Plan. Pure: no I/O, no clock; every decision about what to do lives here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from spotq import notices, plans
from spotq.notices import Kind, Notice
from spotq.ports import NoticeRecord
from spotq.settings import ActionLevel, Settings

# An instance in one of these states is (coming) back: a stop it was marked for is over.
RETURNED_STATES = frozenset({"pending", "running"})
# The notices, by kind and what they said (NoticeRecord.detail), that mean the instance stops and may come back.
STOPPING_DETAILS: dict[Kind, frozenset[str]] = {
    Kind.SPOT_INTERRUPTION: frozenset({"stop", "hibernate"}),
    Kind.STATE_CHANGE: frozenset({"stopping", "stopped"}),
}


@dataclass(frozen=True)
class Policy:
    levels: dict[Kind, ActionLevel]
    complete_lifecycle_launch: bool
    taint_prefix: str
    safety_margin: timedelta
    drain_timeout: timedelta
    min_window: timedelta = timedelta(0)
    launch_wait: timedelta = timedelta(seconds=3300)
    lifecycle_groups: tuple[str, ...] = ()
    """Names, or prefixes ending in '*', of the Auto Scaling groups whose hooks are ours; empty: any group."""
    out_of_service_taint: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        policy = settings.policy
        return cls(
            levels={
                Kind.SPOT_INTERRUPTION: policy.spot_interruption,
                Kind.CAPACITY_RESERVATION_INTERRUPTION: policy.capacity_reservation_interruption,
                Kind.REBALANCE_RECOMMENDATION: policy.rebalance_recommendation,
                Kind.STATE_CHANGE: policy.state_change,
                Kind.SCHEDULED_CHANGE: policy.scheduled_change,
                Kind.LIFECYCLE_TERMINATE: policy.lifecycle_terminate,
            },
            complete_lifecycle_launch=policy.complete_lifecycle_launch,
            taint_prefix=settings.kube.taint_prefix,
            safety_margin=timedelta(seconds=settings.drain.safety_margin_seconds),
            drain_timeout=timedelta(seconds=settings.drain.timeout_seconds),
            min_window=timedelta(seconds=settings.drain.min_window_seconds),
            launch_wait=timedelta(seconds=policy.launch_wait_seconds),
            lifecycle_groups=tuple(g.strip() for g in policy.lifecycle_groups.split(",") if g.strip()),
            out_of_service_taint=settings.drain.out_of_service_taint,
        )

    def taint_key(self, kind: Kind) -> str:
        return f"{self.taint_prefix}/{kind.value.replace('_', '-')}"


def level_for(notice: Notice, policy: Policy) -> ActionLevel:
    if isinstance(notice, notices.StateChange) and not notice.leaving:
        return ActionLevel.NONE
    return policy.levels.get(notice.kind, ActionLevel.NONE)


def hook_group_ours(group_name: str, policy: Policy) -> bool:
    """Whether spotq may complete a lifecycle hook of this Auto Scaling group (SPOTQ_POLICY__LIFECYCLE_GROUPS)."""
    if not policy.lifecycle_groups:
        return True
    return any(
        group_name.startswith(entry[:-1]) if entry.endswith("*") else group_name == entry
        for entry in policy.lifecycle_groups
    )


def record_detail(notice: Notice) -> str | None:
    """What spotq records of a notice beside its id (NoticeRecord.detail): a Spot warning's action, a state
    change's state; None for the other kinds."""
    if isinstance(notice, notices.SpotInterruption | notices.CapacityReservationInterruption):
        return notice.action or None
    if isinstance(notice, notices.StateChange):
        return notice.state or None
    return None


def ends_instance(notice: Notice) -> bool:
    """The notice says the instance goes for good, soon: a Spot or capacity reservation terminate warning, a state
    change to shutting-down or terminated, a terminate hook (not a stop, hibernation, rebalance or scheduled
    change: the node may stay or come back)."""
    if isinstance(notice, notices.SpotInterruption | notices.CapacityReservationInterruption):
        return notice.action == "terminate"
    if isinstance(notice, notices.StateChange):
        return notice.state in ("shutting-down", "terminated")
    return isinstance(notice, notices.LifecycleTerminate)


def overrides_stop(notice: Notice) -> bool:
    """A notice of a kind that can mean a stop which says the instance goes for good (a terminate warning, a
    state change to shutting-down or terminated): its detail replaces a stop already on record, so that a later
    running event releases nothing."""
    detail = record_detail(notice)
    stops = STOPPING_DETAILS.get(notice.kind)
    return detail is not None and stops is not None and detail not in stops


def returned_from_stop(records: tuple[NoticeRecord, ...], returned_at: datetime) -> bool:
    """Whether an instance back at `returned_at` (its pending/running event's time) gets its node's marks released:
    there are records, every one is a stop (STOPPING_DETAILS) and was noticed before `returned_at`. A terminate
    warning, a lifecycle hook, a scheduled change or a record older than `detail` keeps every mark, and so does a
    late or reordered running event (its time not after a notice spotq has on record).

    A record's time is when spotq noticed it (`noticed_at`), or its deadline where it has none: a state change's
    deadline is spotq's own drain limit, not a time the instance keeps, so an instance started again within it
    is still released."""
    if not records:
        return False
    for record in records:
        if record.detail is None or record.detail not in STOPPING_DETAILS.get(record.kind, frozenset()):
            return False
        seen = record.noticed_at or record.deadline
        if seen is None or returned_at <= seen:
            return False
    return True


def launch_deadline(notice: notices.LifecycleLaunch, policy: Policy, received_at: datetime) -> datetime:
    """Until when a launch hook is held for its node to join and go Ready: the hook's own timeout is near then."""
    return (notice.event_time or received_at) + policy.launch_wait


def plan(notice: Notice, policy: Policy, received_at: datetime) -> plans.Plan:
    """The steps for one instance of `notice` whose node is ours (resolved and in scope).

    Nothing is planned for instances that are no node of ours: above all no hook completion, since a terminate
    hook of another cluster's group must wait for that cluster's handler.
    """
    deadline = received_at + policy.drain_timeout
    if notice.deadline is not None:
        deadline = min(deadline, notice.deadline - policy.safety_margin)
    deadline = max(deadline, received_at + policy.min_window)
    steps: list[plans.Step] = []
    if isinstance(notice, notices.LifecycleLaunch):
        if policy.complete_lifecycle_launch:
            steps.append(plans.CompleteLifecycle(notice.hook, when_node_ready=True))
        return plans.Plan(tuple(steps), launch_deadline(notice, policy, received_at))
    if isinstance(notice, notices.StateChange) and notice.state in RETURNED_STATES:
        # A stopped or hibernated instance that returns: marks set for its stop alone come off (nothing else).
        if notice.event_time is None:
            return plans.Plan((), deadline)
        return plans.Plan((plans.ReleaseOnReturn(notice.event_time),), deadline)
    if isinstance(notice, notices.ScheduledChange) and notice.cancelled_or_closed:
        # Nothing is coming: no drain, and marks spotq set for this event alone come off.
        return plans.Plan((plans.Release(),), deadline)
    level = level_for(notice, policy)
    steps.extend(_node_steps(notice.kind, level, policy))
    if policy.out_of_service_taint and level.rank >= ActionLevel.DRAIN.rank and ends_instance(notice):
        steps.append(plans.OutOfService())
    if isinstance(notice, notices.LifecycleTerminate):
        # The hook holds the instance until completed; completing it is ours whatever the level.
        steps.append(plans.CompleteLifecycle(notice.hook))
    return plans.Plan(tuple(steps), deadline)


def _node_steps(kind: Kind, level: ActionLevel, policy: Policy) -> list[plans.Step]:
    steps: list[plans.Step] = []
    if level.rank >= ActionLevel.EVENT.rank:
        steps.append(plans.Announce())
    if level.rank >= ActionLevel.TAINT.rank:
        effect: plans.TaintEffect = (
            "PreferNoSchedule" if kind is Kind.REBALANCE_RECOMMENDATION and level is ActionLevel.TAINT else "NoSchedule"
        )
        steps.append(plans.Taint(policy.taint_key(kind), effect))
    if level.rank >= ActionLevel.CORDON.rank:
        steps.append(plans.Cordon())
        steps.append(plans.ExcludeFromLoadBalancers())
    if level.rank >= ActionLevel.DRAIN.rank:
        steps.append(plans.Drain())
    return steps
