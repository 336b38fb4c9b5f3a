"""IMDS metadata document → typed notices (source "imds"): the parsing step of IMDS mode. Pure; never raises.

The rules are the queue's (spotq.parsing): one decoding path (UTF-8, a BOM dropped, bounded size and nesting), the
same time readers and range, and the same instance-id rule. Two leniencies IMDS has always had: an RFC 3339 time
without a zone is read as UTC, and maintenance times come as `21 Jan 2019 09:00:43 GMT` (RFC 1123, no weekday).

Maintenance `State` maps onto ScheduledChange.status: active → open, completed → closed, canceled → cancelled;
any other state is malformed.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from spotq import notices, parsing
from spotq.notices import InstanceId, Notice

SPOT_ACTIONS = frozenset({"terminate", "stop", "hibernate"})

_MAINTENANCE_STATUS = {"active": "open", "completed": "closed", "canceled": "cancelled"}


def parse_instance_action(body: str, instance_id: InstanceId | None = None) -> list[Notice]:
    """`{"action": "terminate", "time": "..."}`: the action happens at `time`, which is the deadline itself."""
    doc = _json(body)
    if not isinstance(doc, dict):
        return [_malformed("instance-action is not a JSON object", instance_id)]
    action, when = doc.get("action"), _rfc3339(doc.get("time"))
    if action not in SPOT_ACTIONS:
        return [_malformed(f"instance-action has unknown action {str(action)[:40]!r}", instance_id)]
    if when is None:
        return [_malformed(f"instance-action has no valid time: {str(doc.get('time'))[:40]!r}", instance_id)]
    return [
        notices.SpotInterruption(
            event_id=f"imds-{when:%Y%m%dT%H%M%SZ}",
            instance_ids=_ids(instance_id),
            deadline=when,
            action=action,
            source="imds",
        )
    ]


def parse_rebalance(body: str, instance_id: InstanceId | None = None) -> list[Notice]:
    """`{"noticeTime": "..."}`: a recommendation with no deadline of its own."""
    doc = _json(body)
    when = _rfc3339(doc.get("noticeTime")) if isinstance(doc, dict) else None
    if when is None:
        return [_malformed("rebalance recommendation has no valid noticeTime", instance_id)]
    return [
        notices.RebalanceRecommendation(
            event_id=f"imds-{when:%Y%m%dT%H%M%SZ}", event_time=when, instance_ids=_ids(instance_id), source="imds"
        )
    ]


# Auto Scaling's target lifecycle states (InService, Pending, Standby, Detached, Warmed:Stopped, ...): one word, or
# `Warmed:` and one; only Terminated is a notice.
_LIFECYCLE_STATE = re.compile(r"[A-Za-z]{1,32}(:[A-Za-z]{1,32})?")


def parse_target_lifecycle_state(body: str, instance_id: InstanceId | None = None) -> list[Notice]:
    """`autoscaling/target-lifecycle-state`, plain text: `Terminated` means the group is terminating the instance."""
    state = body.strip()
    if not _LIFECYCLE_STATE.fullmatch(state):
        return [_malformed(f"target-lifecycle-state is not a lifecycle state: {state[:40]!r}", instance_id)]
    if state != "Terminated":
        return []
    return [
        notices.AutoScalingTerminating(
            event_id="imds-target-lifecycle-terminated", instance_ids=_ids(instance_id), source="imds"
        )
    ]


def parse_scheduled_maintenance(body: str, instance_id: InstanceId | None = None) -> list[Notice]:
    """A list of events: `active` ones are pending; completed and canceled ones stay listed a while.

    Every listed event becomes a notice with its status (planning decides what an ended one means); an active one
    needs a valid NotBefore, an ended one may lack it.
    """
    doc = _json(body)
    if not isinstance(doc, list):
        return [_malformed("scheduled maintenance is not a JSON list", instance_id)]
    return [_maintenance_event(event, instance_id) for event in doc]


def _maintenance_event(event: object, instance_id: InstanceId | None) -> Notice:
    if not isinstance(event, dict):
        return _malformed("scheduled maintenance entry is not an object", instance_id)
    state = str(event.get("State", ""))[:40]
    status = _MAINTENANCE_STATUS.get(state.lower())
    if status is None:
        return _malformed(f"scheduled maintenance event has unknown State {state!r}", instance_id)
    event_id, raw_not_before = event.get("EventId"), event.get("NotBefore")
    not_before = _imds_time(raw_not_before)
    if not isinstance(event_id, str) or not event_id:
        return _malformed("scheduled maintenance event lacks an EventId", instance_id)
    if not_before is None and (status == "open" or raw_not_before is not None):
        return _malformed("scheduled maintenance event lacks a valid NotBefore", instance_id)
    return notices.ScheduledChange(
        event_id=event_id,
        instance_ids=_ids(instance_id),
        deadline=not_before,
        event_type_code=str(event.get("Code", ""))[:100],
        status=status,
        source="imds",
    )


def _json(body: str) -> Any:
    try:
        return parsing.load_json(body)
    except parsing.MalformedError:
        return None


def _rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parsing.rfc3339(value, naive_is_utc=True)
    except parsing.MalformedError:
        return None


def _imds_time(value: object) -> datetime | None:
    """Maintenance events say `21 Jan 2019 09:00:43 GMT`; accept RFC 3339 too."""
    if not isinstance(value, str):
        return None
    try:
        return parsing.rfc1123(value)
    except parsing.MalformedError:
        return _rfc3339(value)


def _ids(instance_id: InstanceId | None) -> tuple[InstanceId, ...]:
    return (instance_id,) if instance_id else ()


def _malformed(reason: str, instance_id: InstanceId | None) -> Notice:
    return notices.Malformed(reason=reason, instance_ids=_ids(instance_id), source="imds")
