"""The planning table: which steps each kind of notice gets under the default and custom policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotq import notices, planning, plans
from spotq.notices import InstanceId, LifecycleHook
from spotq.settings import ActionLevel, Settings

T0 = datetime(2025, 6, 3, 14, 20, 5, tzinfo=UTC)
IDS = (InstanceId("i-0b662ef9931388ba0"),)
HOOK = LifecycleHook("asg", "hook", "token", IDS[0])
FULL = ["event", "taint", "cordon", "exclude_from_load_balancers", "drain"]


def policy(**env: str) -> planning.Policy:
    return planning.Policy.from_settings(Settings(**env))  # type: ignore[arg-type]


DEFAULT = planning.Policy.from_settings(Settings())


@pytest.mark.parametrize(
    ("notice", "steps"),
    [
        (
            notices.SpotInterruption(event_id="e", event_time=T0, instance_ids=IDS, deadline=T0 + timedelta(minutes=2)),
            FULL,
        ),
        (notices.StateChange(event_id="e", event_time=T0, instance_ids=IDS, state="shutting-down"), FULL),
        (notices.StateChange(event_id="e", event_time=T0, instance_ids=IDS, state="stopped"), FULL),
        (notices.StateChange(event_id="e", event_time=T0, instance_ids=IDS, state="running"), ["release_on_return"]),
        (notices.ScheduledChange(event_id="e", event_time=T0, instance_ids=IDS), FULL),
        (
            notices.LifecycleTerminate(event_id="e", event_time=T0, instance_ids=IDS, hook=HOOK),
            [*FULL, "complete_lifecycle"],
        ),
        (notices.AutoScalingTerminating(event_id="e", instance_ids=IDS, source="imds"), FULL),  # no hook to complete
        (notices.LifecycleLaunch(event_id="e", event_time=T0, instance_ids=IDS, hook=HOOK), []),
        (notices.RebalanceRecommendation(event_id="e", event_time=T0, instance_ids=IDS), ["event", "taint"]),
        (
            notices.CapacityReservationInterruption(
                event_id="e", event_time=T0, instance_ids=IDS, deadline=T0 + timedelta(minutes=2)
            ),
            FULL,
        ),
    ],
)
def test_default_plans(notice: notices.Notice, steps: list[str]) -> None:
    assert planning.plan(notice, DEFAULT, T0).step_names == steps


def test_rebalance_taint_prefers_no_schedule_and_interruption_forbids() -> None:
    rebalance = planning.plan(notices.RebalanceRecommendation(event_time=T0, instance_ids=IDS), DEFAULT, T0)
    spot = planning.plan(notices.SpotInterruption(event_time=T0, instance_ids=IDS, deadline=T0), DEFAULT, T0)
    assert rebalance.find(plans.Taint) == plans.Taint("spotq.io/rebalance-recommendation", "PreferNoSchedule")
    assert spot.find(plans.Taint) == plans.Taint("spotq.io/spot-interruption", "NoSchedule")


@pytest.mark.parametrize(
    ("level", "steps"),
    [
        (ActionLevel.NONE, []),
        (ActionLevel.EVENT, ["event"]),
        (ActionLevel.TAINT, ["event", "taint"]),
        (ActionLevel.CORDON, ["event", "taint", "cordon", "exclude_from_load_balancers"]),
        (ActionLevel.DRAIN, FULL),
    ],
)
def test_rebalance_level_is_configurable(level: ActionLevel, steps: list[str]) -> None:
    custom = policy(policy={"rebalance_recommendation": level})
    assert (
        planning.plan(notices.RebalanceRecommendation(event_time=T0, instance_ids=IDS), custom, T0).step_names == steps
    )


def test_launch_hook_completion_is_opt_in() -> None:
    custom = policy(policy={"complete_lifecycle_launch": True})
    plan = planning.plan(notices.LifecycleLaunch(event_time=T0, instance_ids=IDS, hook=HOOK), custom, T0)
    assert plan.steps == (plans.CompleteLifecycle(HOOK, when_node_ready=True),)


@pytest.mark.parametrize(
    ("groups", "group", "ours"),
    [
        ("", "anything", True),
        ("eks-spot-*", "eks-spot-a", True),
        ("eks-spot-*", "eks-on-demand", False),
        ("batch,eks-spot-*", "batch", True),
        ("batch", "batch-2", False),
    ],
)
def test_hook_groups_are_names_or_prefixes(groups: str, group: str, ours: bool) -> None:
    assert planning.hook_group_ours(group, policy(policy={"lifecycle_groups": groups})) is ours


def test_launch_hook_is_held_until_the_launch_wait_after_its_event() -> None:
    custom = policy(policy={"complete_lifecycle_launch": True, "launch_wait_seconds": 600})
    plan = planning.plan(notices.LifecycleLaunch(event_time=T0, instance_ids=IDS, hook=HOOK), custom, T0)
    assert plan.deadline == T0 + timedelta(seconds=600)


def test_deadline_is_notice_deadline_less_margin() -> None:
    spot = notices.SpotInterruption(event_time=T0, instance_ids=IDS, deadline=T0 + timedelta(seconds=120))
    assert planning.plan(spot, DEFAULT, T0 + timedelta(seconds=3)).deadline == T0 + timedelta(seconds=110)


def test_deadline_without_notice_deadline_is_receipt_plus_timeout() -> None:
    change = notices.StateChange(event_time=T0, instance_ids=IDS, state="stopping")
    received = T0 + timedelta(seconds=7)
    assert planning.plan(change, DEFAULT, received).deadline == received + timedelta(seconds=300)


def test_far_deadline_is_capped_by_drain_timeout() -> None:
    health = notices.ScheduledChange(event_time=T0, instance_ids=IDS, deadline=T0 + timedelta(days=14))
    assert planning.plan(health, DEFAULT, T0).deadline == T0 + timedelta(seconds=300)


def test_late_notice_still_gets_the_minimum_window() -> None:
    spot = notices.SpotInterruption(event_time=T0, instance_ids=IDS, deadline=T0 + timedelta(seconds=120))
    late = T0 + timedelta(minutes=10)
    assert planning.plan(spot, DEFAULT, late).deadline == late + timedelta(seconds=15)


@pytest.mark.parametrize(
    ("status", "steps"), [("open", FULL), ("upcoming", FULL), ("closed", ["release"]), ("cancelled", ["release"])]
)
def test_a_scheduled_change_that_ended_releases_instead_of_draining(status: str, steps: list[str]) -> None:
    health = notices.ScheduledChange(event_id="e", event_time=T0, instance_ids=IDS, status=status)
    assert planning.plan(health, DEFAULT, T0).step_names == steps


def test_capacity_reservation_interruption_level_is_its_own_setting() -> None:
    notice = notices.CapacityReservationInterruption(event_id="e", event_time=T0, instance_ids=IDS)
    custom = policy(policy={"capacity_reservation_interruption": "cordon"})
    assert planning.plan(notice, custom, T0).step_names == ["event", "taint", "cordon", "exclude_from_load_balancers"]
    assert planning.plan(notice, DEFAULT, T0).steps[1] == plans.Taint(
        "spotq.io/capacity-reservation-interruption", "NoSchedule"
    )


# --- a stopped or hibernated instance that returns ---------------------------------------------------------------


def record(kind: notices.Kind, detail: str | None, at: datetime | None = T0) -> planning.NoticeRecord:
    return planning.NoticeRecord(kind, "x", deadline=T0 + timedelta(minutes=5), noticed_at=at, detail=detail)


@pytest.mark.parametrize("state", ["running", "pending"])
def test_a_returning_instance_plans_a_guarded_release_only(state: str) -> None:
    back = notices.StateChange(event_id="r", event_time=T0, instance_ids=IDS, state=state)
    plan = planning.plan(back, DEFAULT, T0)
    assert plan.steps == (plans.ReleaseOnReturn(T0),) and not plan.marks_node and not plan.drains


def test_what_a_notice_records_of_itself() -> None:
    stop = notices.SpotInterruption(event_id="e", event_time=T0, instance_ids=IDS, action="hibernate")
    assert planning.record_detail(stop) == "hibernate"
    assert planning.record_detail(notices.StateChange(event_id="s", instance_ids=IDS, state="stopped")) == "stopped"
    assert planning.record_detail(notices.RebalanceRecommendation(event_id="b", instance_ids=IDS)) is None


LATER = T0 + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("on_record", "released"),
    [
        ((record(notices.Kind.SPOT_INTERRUPTION, "stop"),), True),
        ((record(notices.Kind.SPOT_INTERRUPTION, "hibernate"), record(notices.Kind.STATE_CHANGE, "stopped")), True),
        # within the state change's drain limit (its deadline), but after it was noticed
        ((record(notices.Kind.STATE_CHANGE, "stopping"),), True),
        # no noticed_at: its deadline is the time to be after
        ((record(notices.Kind.STATE_CHANGE, "stopping", at=None),), False),
        ((), False),
        ((record(notices.Kind.SPOT_INTERRUPTION, "terminate"),), False),
        ((record(notices.Kind.SPOT_INTERRUPTION, None),), False),  # recorded before spotq kept the action
        ((record(notices.Kind.STATE_CHANGE, "shutting-down"),), False),
        ((record(notices.Kind.SPOT_INTERRUPTION, "stop"), record(notices.Kind.LIFECYCLE_TERMINATE, None)), False),
        ((record(notices.Kind.SPOT_INTERRUPTION, "stop"), record(notices.Kind.REBALANCE_RECOMMENDATION, None)), False),
        # a late or reordered running event: not after the stop spotq noticed
        ((record(notices.Kind.SPOT_INTERRUPTION, "stop", at=LATER),), False),
        ((record(notices.Kind.SPOT_INTERRUPTION, "stop", at=LATER + timedelta(seconds=1)),), False),
    ],
)
def test_a_return_releases_only_a_node_marked_for_an_earlier_stop_alone(
    on_record: tuple[planning.NoticeRecord, ...], released: bool
) -> None:
    assert planning.returned_from_stop(on_record, LATER) is released


def test_the_out_of_service_taint_is_planned_only_for_drains_of_instances_that_go_for_good() -> None:
    on = policy(drain={"out_of_service_taint": True})  # type: ignore[arg-type]
    due = T0 + timedelta(minutes=2)
    going = [
        notices.SpotInterruption(event_id="e", event_time=T0, instance_ids=IDS, deadline=due),
        notices.StateChange(event_id="s", event_time=T0, instance_ids=IDS, state="shutting-down"),
        notices.LifecycleTerminate(event_id="l", event_time=T0, instance_ids=IDS, hook=HOOK),
    ]
    staying = [
        notices.SpotInterruption(event_id="e", event_time=T0, instance_ids=IDS, deadline=due, action="stop"),
        notices.StateChange(event_id="s", event_time=T0, instance_ids=IDS, state="stopping"),
        notices.ScheduledChange(event_id="h", event_time=T0, instance_ids=IDS, deadline=T0 + timedelta(days=2)),
        notices.RebalanceRecommendation(event_id="r", event_time=T0, instance_ids=IDS),
    ]
    for notice in going:
        assert planning.plan(notice, on, T0).find(plans.OutOfService) is not None, notice
        assert planning.plan(notice, DEFAULT, T0).find(plans.OutOfService) is None
    for notice in staying:
        assert planning.plan(notice, on, T0).find(plans.OutOfService) is None, notice
