"""What flows through the pipeline: a Delivery (body + receipt) becomes a typed Notice.

Notices are plain frozen data: parsing builds them, planning reads them, nothing mutates them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, NewType

InstanceId = NewType("InstanceId", str)

# The interruption lands about two minutes after the Spot warning's `time`.
SPOT_WARNING_LEAD = timedelta(seconds=120)


class Kind(enum.StrEnum):
    SPOT_INTERRUPTION = "spot_interruption"
    CAPACITY_RESERVATION_INTERRUPTION = "capacity_reservation_interruption"
    REBALANCE_RECOMMENDATION = "rebalance_recommendation"
    STATE_CHANGE = "state_change"
    SCHEDULED_CHANGE = "scheduled_change"
    LIFECYCLE_TERMINATE = "lifecycle_terminate"
    LIFECYCLE_LAUNCH = "lifecycle_launch"
    TEST_NOTIFICATION = "test_notification"
    IGNORED = "ignored"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Delivery:
    """One SQS message as received: the body and the newest handle that can delete it."""

    message_id: str
    body: str
    receipt_handle: str
    receive_count: int = 1
    sent_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Notice:
    """A classified message. `deadline` is the event's own deadline (None when the event has none)."""

    kind: ClassVar[Kind]
    event_id: str | None = None
    event_time: datetime | None = None
    instance_ids: tuple[InstanceId, ...] = ()
    deadline: datetime | None = None
    source: str = "sqs"


@dataclass(frozen=True, kw_only=True)
class SpotInterruption(Notice):
    kind: ClassVar[Kind] = Kind.SPOT_INTERRUPTION
    action: str = "terminate"


@dataclass(frozen=True, kw_only=True)
class CapacityReservationInterruption(Notice):
    """An instance in an interruptible Capacity Reservation (or a Capacity Block ending) is being reclaimed.

    `deadline` is the event's `instance-termination-time`, or two minutes after the event when it gives none.
    """

    kind: ClassVar[Kind] = Kind.CAPACITY_RESERVATION_INTERRUPTION
    action: str = "terminate"
    instance_lifecycle: str = ""


@dataclass(frozen=True, kw_only=True)
class RebalanceRecommendation(Notice):
    kind: ClassVar[Kind] = Kind.REBALANCE_RECOMMENDATION


@dataclass(frozen=True, kw_only=True)
class StateChange(Notice):
    kind: ClassVar[Kind] = Kind.STATE_CHANGE
    state: str = ""

    # pending and running are ordinary; these mean the instance is going away.
    LEAVING_STATES: ClassVar[frozenset[str]] = frozenset({"stopping", "stopped", "shutting-down", "terminated"})

    @property
    def leaving(self) -> bool:
        return self.state in self.LEAVING_STATES


@dataclass(frozen=True, kw_only=True)
class ScheduledChange(Notice):
    """An AWS Health scheduled change or an IMDS maintenance event.

    `status` is Health's `statusCode`, lowercased: open | upcoming | closed | cancelled (other values are kept as
    sent). IMDS maintenance states map onto the same words: active → open, completed → closed, canceled → cancelled.
    """

    kind: ClassVar[Kind] = Kind.SCHEDULED_CHANGE
    event_type_code: str = ""
    status: str = "open"

    # The change will not happen (any more): nothing to prepare for, and marks set for it can come off.
    ENDED_STATUSES: ClassVar[frozenset[str]] = frozenset({"closed", "cancelled"})

    @property
    def cancelled_or_closed(self) -> bool:
        return self.status in self.ENDED_STATUSES


@dataclass(frozen=True)
class LifecycleHook:
    """What CompleteLifecycleAction and RecordLifecycleActionHeartbeat need."""

    group_name: str
    hook_name: str
    token: str
    instance_id: InstanceId
    destination: str | None = None


@dataclass(frozen=True, kw_only=True)
class LifecycleTerminate(Notice):
    kind: ClassVar[Kind] = Kind.LIFECYCLE_TERMINATE
    hook: LifecycleHook


@dataclass(frozen=True, kw_only=True)
class AutoScalingTerminating(Notice):
    """IMDS says the instance's Auto Scaling target lifecycle state is `Terminated`: the group is terminating it.

    A terminate notice like LifecycleTerminate, under the same policy, but with no hook to complete (IMDS gives no
    token; queue mode completes hooks) and no deadline of its own.
    """

    kind: ClassVar[Kind] = Kind.LIFECYCLE_TERMINATE


@dataclass(frozen=True, kw_only=True)
class LifecycleLaunch(Notice):
    kind: ClassVar[Kind] = Kind.LIFECYCLE_LAUNCH
    hook: LifecycleHook


@dataclass(frozen=True, kw_only=True)
class TestNotification(Notice):
    __test__: ClassVar[bool] = False  # not a pytest test class
    kind: ClassVar[Kind] = Kind.TEST_NOTIFICATION


@dataclass(frozen=True, kw_only=True)
class Ignored(Notice):
    kind: ClassVar[Kind] = Kind.IGNORED
    reason: str = field(default="")


@dataclass(frozen=True, kw_only=True)
class Malformed(Notice):
    kind: ClassVar[Kind] = Kind.MALFORMED
    reason: str = field(default="")


def spot_deadline(event_time: datetime, action: str) -> datetime:
    """Hibernation has no lead time; stop and terminate come two minutes after the warning."""
    return event_time if action == "hibernate" else event_time + SPOT_WARNING_LEAD
