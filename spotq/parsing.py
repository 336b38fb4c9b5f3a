"""Message body → typed Notice. Never raises: anything unusable becomes Ignored or Malformed.

Shapes accepted: an EventBridge envelope (dispatched on (source, detail-type)), an Auto Scaling notification
posted straight to SQS (flat PascalCase), and either of those wrapped once by SNS (`Type: Notification`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from spotq import notices
from spotq.notices import InstanceId, Notice

# SQS caps a message at 1 MiB; anything larger did not come from AWS.
MAX_BODY_BYTES = 1024 * 1024
# Real events nest four or five levels deep; far more is an attack or a bug, not an event.
MAX_NESTING = 16

_INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")


class _MalformedError(Exception):
    """Internal: the body is malformed, with a reason for the operator."""


def parse(body: str | bytes, *, source: str = "sqs") -> Notice:
    """Classify one message body. Always returns a Notice; never raises."""
    try:
        return _parse(body, source)
    except _MalformedError as bad:
        return notices.Malformed(reason=str(bad), source=source)
    except Exception as exc:
        return notices.Malformed(reason=f"unexpected {type(exc).__name__}: {exc}", source=source)


def _parse(body: str | bytes, source: str) -> Notice:
    size = len(body.encode() if isinstance(body, str) else body)
    if size > MAX_BODY_BYTES:
        raise _MalformedError(f"body is {size} bytes, more than {MAX_BODY_BYTES}")
    try:
        doc = json.loads(body)
    except RecursionError as exc:
        raise _MalformedError("body nests too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise _MalformedError(f"body is not JSON: {exc}") from exc
    _check_nesting(doc)
    if not isinstance(doc, dict):
        raise _MalformedError(f"body is a JSON {type(doc).__name__}, not an object")
    if doc.get("Type") == "Notification" and "Message" in doc:
        inner = doc["Message"]
        if not isinstance(inner, str):
            raise _MalformedError("SNS Message is not a string")
        notice = _parse(inner, source)
        return notice
    if "detail-type" in doc or "detail" in doc:
        return _eventbridge(doc, source)
    if doc.get("Service") == "AWS Auto Scaling":
        return _autoscaling_direct(doc, source)
    return notices.Ignored(reason="neither an EventBridge event nor an Auto Scaling notification", source=source)


def _check_nesting(doc: Any) -> None:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _MalformedError(f"body nests deeper than {MAX_NESTING} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


# --- EventBridge -------------------------------------------------------------------------------------------


def _eventbridge(doc: dict[str, Any], source: str) -> Notice:
    event_source = _str(doc, "source")
    detail_type = _str(doc, "detail-type")
    event_id = _str(doc, "id")
    event_time = _rfc3339(_str(doc, "time"), "time")
    detail = doc.get("detail")
    if not isinstance(detail, dict):
        raise _MalformedError("detail is missing or not an object")
    build = _EVENTBRIDGE.get((event_source, detail_type))
    if build is None:
        return notices.Ignored(
            event_id=event_id,
            event_time=event_time,
            reason=f"unhandled event source={event_source!r} detail-type={detail_type!r}",
            source=source,
        )
    return build(detail, event_id, event_time, source)


def _spot_warning(detail: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    action = _str(detail, "instance-action")
    return notices.SpotInterruption(
        event_id=event_id,
        event_time=event_time,
        instance_ids=(_instance(detail, "instance-id"),),
        deadline=notices.spot_deadline(event_time, action),
        action=action,
        source=source,
    )


def _rebalance(detail: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    return notices.RebalanceRecommendation(
        event_id=event_id, event_time=event_time, instance_ids=(_instance(detail, "instance-id"),), source=source
    )


def _state_change(detail: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    return notices.StateChange(
        event_id=event_id,
        event_time=event_time,
        instance_ids=(_instance(detail, "instance-id"),),
        state=_str(detail, "state"),
        source=source,
    )


def _lifecycle(detail: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    return _lifecycle_notice(detail, event_id, event_time, source)


def _health(detail: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    service = _str(detail, "service")
    category = _str(detail, "eventTypeCategory")
    if service != "EC2" or category != "scheduledChange":
        return notices.Ignored(
            event_id=event_id,
            event_time=event_time,
            reason=f"health event for service={service!r} category={category!r}",
            source=source,
        )
    entities = detail.get("affectedEntities")
    if not isinstance(entities, list):
        raise _MalformedError("detail.affectedEntities is missing or not a list")
    ids: list[InstanceId] = []
    for entity in entities:
        if not isinstance(entity, dict):
            raise _MalformedError("detail.affectedEntities holds a non-object")
        value = entity.get("entityValue")
        if isinstance(value, str) and _INSTANCE_ID.match(value) and value not in ids:
            ids.append(InstanceId(value))
    if not ids:
        return notices.Ignored(
            event_id=event_id, event_time=event_time, reason="health event names no EC2 instance", source=source
        )
    start = detail.get("startTime")
    return notices.ScheduledChange(
        event_id=event_id,
        event_time=event_time,
        instance_ids=tuple(ids),
        deadline=_rfc1123(start, "detail.startTime") if start is not None else None,
        event_type_code=str(detail.get("eventTypeCode", "")),
        source=source,
    )


_Builder = Callable[[dict[str, Any], str, datetime, str], Notice]

_EVENTBRIDGE: dict[tuple[str, str], _Builder] = {
    ("aws.ec2", "EC2 Spot Instance Interruption Warning"): _spot_warning,
    ("aws.ec2", "EC2 Instance Rebalance Recommendation"): _rebalance,
    ("aws.ec2", "EC2 Instance State-change Notification"): _state_change,
    ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action"): _lifecycle,
    ("aws.autoscaling", "EC2 Instance-launch Lifecycle Action"): _lifecycle,
    ("aws.health", "AWS Health Event"): _health,
}


# --- Auto Scaling straight to SQS (or via SNS) ---------------------------------------------------------------


def _autoscaling_direct(doc: dict[str, Any], source: str) -> Notice:
    event_id = _str(doc, "RequestId")
    event_time = _rfc3339(_str(doc, "Time"), "Time")
    if doc.get("Event") == "autoscaling:TEST_NOTIFICATION":
        return notices.TestNotification(event_id=event_id, event_time=event_time, source=source)
    if "LifecycleTransition" not in doc:
        return notices.Ignored(
            event_id=event_id,
            event_time=event_time,
            reason=f"auto scaling notification {doc.get('Event')!r} is not a lifecycle action",
            source=source,
        )
    return _lifecycle_notice(doc, event_id, event_time, source)


def _lifecycle_notice(fields: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    transition = _str(fields, "LifecycleTransition")
    instance_id = _instance(fields, "EC2InstanceId")
    hook = notices.LifecycleHook(
        group_name=_str(fields, "AutoScalingGroupName"),
        hook_name=_str(fields, "LifecycleHookName"),
        token=_str(fields, "LifecycleActionToken"),
        instance_id=instance_id,
        destination=fields.get("Destination") if isinstance(fields.get("Destination"), str) else None,
    )
    common = {"event_id": event_id, "event_time": event_time, "instance_ids": (instance_id,), "source": source}
    if transition == "autoscaling:EC2_INSTANCE_TERMINATING":
        return notices.LifecycleTerminate(hook=hook, **common)  # type: ignore[arg-type]
    if transition == "autoscaling:EC2_INSTANCE_LAUNCHING":
        return notices.LifecycleLaunch(hook=hook, **common)  # type: ignore[arg-type]
    return notices.Ignored(
        event_id=event_id, event_time=event_time, reason=f"lifecycle transition {transition!r}", source=source
    )


# --- field readers ------------------------------------------------------------------------------------------


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        raise _MalformedError(f"required field {key!r} is missing")
    if not isinstance(value, str) or not value:
        raise _MalformedError(f"field {key!r} is not a non-empty string")
    return value


def _instance(obj: dict[str, Any], key: str) -> InstanceId:
    value = _str(obj, key)
    if not _INSTANCE_ID.match(value):
        raise _MalformedError(f"field {key!r} is not an EC2 instance id: {value[:40]!r}")
    return InstanceId(value)


def _rfc3339(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _MalformedError(f"field {name!r} is not an RFC 3339 time: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        raise _MalformedError(f"field {name!r} has no time zone: {value[:40]!r}")
    return parsed.astimezone(UTC)


def _rfc1123(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise _MalformedError(f"field {name!r} is not a string")
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError) as exc:
        raise _MalformedError(f"field {name!r} is not an RFC 1123 time: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        raise _MalformedError(f"field {name!r} has no time zone: {value[:40]!r}")
    return parsed.astimezone(UTC)
