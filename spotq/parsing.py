"""Message body → typed Notice: the first step of the pipeline. A bad body never raises; a bug in spotq does.

Shapes accepted: an EventBridge envelope (dispatched on (source, detail-type)), an Auto Scaling notification
posted straight to SQS (flat PascalCase), and either of those wrapped by SNS (`Type: Notification`).

How the edge cases are classified (malformed and ignored bodies are deleted and counted; see acknowledging):

| Body                                                                  | Classified as                         |
|-----------------------------------------------------------------------|---------------------------------------|
| over MAX_BODY_BYTES; not UTF-8 (UTF-16 too); a lone surrogate         | malformed                             |
| a leading UTF-8 BOM (str from SQS and bytes in `spotq explain` alike) | accepted, the BOM dropped             |
| not JSON; not an object; nested deeper than MAX_NESTING               | malformed                             |
| an integer of over 4300 digits anywhere (Python will not read it)     | malformed                             |
| SNS-wrapped more than MAX_SNS_WRAPPERS times (AWS wraps once)         | malformed                             |
| EventBridge keys (detail-type, detail) and SNS keys (Type, Message)   | EventBridge; Message is just a field  |
| a lifecycle detail-type and LifecycleTransition that disagree         | malformed (never launch as terminate) |
| an instance id other than exactly `i-` + 8 or 17 lowercase hex        | malformed; in a Health event, skipped |
| a Health event naming over MAX_INSTANCES_PER_MESSAGE instances        | malformed                             |
| Health statusCode open/upcoming/closed/cancelled (absent: open)       | ScheduledChange.status, lowercased    |
| RFC 3339: T, t or space; Z, z or ±HH:MM; fractions                    | accepted                              |
| RFC 3339 week-date, basic (20250603T…) or zoneless forms              | malformed                             |
| RFC 1123: GMT, UT, UTC, Z, ±HHMM, and -0000 (= UTC)                   | accepted                              |
| RFC 1123 without a zone, with a 2-digit year or a named zone (EST)    | malformed                             |
| a leap second (:60)                                                   | the second before: deadlines early    |
| a time before EARLIEST_TIME or from LATEST_TIME (year 1, year 9999)   | malformed: deadlines are computed     |
| a known shape with unknown fields or keys in another order            | classified as usual                   |
| an object of neither shape; an unhandled (source, detail-type)        | ignored                               |

Any other exception out of `parse` is a bug in spotq, not a bad body: it propagates, so the message is retried (and
ends in the DLQ) rather than deleted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from spotq import notices
from spotq.notices import InstanceId, Notice

# SQS caps a message at 1 MiB; anything larger did not come from AWS.
MAX_BODY_BYTES = 1024 * 1024
# Real events nest four or five levels deep; far more is an attack or a bug, not an event.
MAX_NESTING = 16
# AWS wraps a notification in SNS once; a few levels of fan-out are tolerated, more is not an event.
MAX_SNS_WRAPPERS = 3
# The most instances one message may name (real Health events name a handful): bounds one message's work.
MAX_INSTANCES_PER_MESSAGE = 1000
# No AWS event is dated outside these, and deadlines computed from them must not overflow the calendar.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)

INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_RFC1123 = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) (" + "|".join(_MONTHS) + r") (\d{4}) "
    r"(\d{2}):(\d{2}):(\d{2}) (?:(GMT|UTC|UT|Z)|([+-])(\d{2})(\d{2}))"
)


class MalformedError(Exception):
    """The input is unusable; the message says why, for the operator."""


def parse(body: str | bytes, *, source: str = "sqs") -> Notice:
    """Classify one message body. Every bad body becomes a Notice (Malformed, Ignored); a bug raises."""
    try:
        return _parse(body, source, wrappers=0)
    except MalformedError as bad:
        return notices.Malformed(reason=str(bad), source=source)


def is_instance_id(value: str) -> bool:
    """`i-` and 8 or 17 lowercase hex digits, and nothing else (no trailing newline)."""
    return INSTANCE_ID.fullmatch(value) is not None


def load_json(body: str | bytes) -> Any:
    """One decoding path for str (SQS, IMDS) and bytes (`spotq explain`): UTF-8, a leading BOM dropped."""
    if isinstance(body, str):
        try:
            raw = body.encode()
        except UnicodeEncodeError as exc:
            raise MalformedError(f"body is not valid Unicode: {exc.reason}") from exc
    else:
        raw = body
    if len(raw) > MAX_BODY_BYTES:
        raise MalformedError(f"body is more than {MAX_BODY_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        doc = json.loads(text)
    except RecursionError as exc:
        raise MalformedError("body nests too deeply") from exc
    except json.JSONDecodeError as exc:
        raise MalformedError(f"body is not JSON: {exc}") from exc
    except ValueError as exc:
        # int() refuses integers of more than sys.get_int_max_str_digits() digits (4300 by default).
        raise MalformedError(f"body holds a number too large to read: {str(exc)[:120]}") from exc
    _check_nesting(doc)
    return doc


def _parse(body: str | bytes, source: str, wrappers: int) -> Notice:
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise MalformedError(f"body is a JSON {type(doc).__name__}, not an object")
    # EventBridge first: its envelope is typed and checked; an SNS notification never carries detail-type.
    if "detail-type" in doc or "detail" in doc:
        return _eventbridge(doc, source)
    if doc.get("Type") == "Notification" and "Message" in doc:
        if wrappers >= MAX_SNS_WRAPPERS:
            raise MalformedError(f"body is wrapped in SNS more than {MAX_SNS_WRAPPERS} times")
        inner = doc["Message"]
        if not isinstance(inner, str):
            raise MalformedError("SNS Message is not a string")
        return _parse(inner, source, wrappers + 1)
    if doc.get("Service") == "AWS Auto Scaling":
        return _autoscaling_direct(doc, source)
    return notices.Ignored(reason="neither an EventBridge event nor an Auto Scaling notification", source=source)


def _check_nesting(doc: Any) -> None:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise MalformedError(f"body nests deeper than {MAX_NESTING} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


# --- EventBridge -------------------------------------------------------------------------------------------


def _eventbridge(doc: dict[str, Any], source: str) -> Notice:
    event_source = _str(doc, "source")
    detail_type = _str(doc, "detail-type")
    event_id = _str(doc, "id")
    event_time = _time(doc, "time", rfc3339)
    detail = doc.get("detail")
    if not isinstance(detail, dict):
        raise MalformedError("detail is missing or not an object")
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


def _capacity_reservation_warning(detail: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    # `instance-termination-time` says when the instance goes; without it, the same two minutes as a Spot warning.
    termination = (
        _time(detail, "instance-termination-time", rfc3339)
        if detail.get("instance-termination-time") is not None
        else notices.spot_deadline(event_time, "terminate")
    )
    lifecycle = detail.get("instance-lifecycle")
    return notices.CapacityReservationInterruption(
        event_id=event_id,
        event_time=event_time,
        instance_ids=(_instance(detail, "instance-id"),),
        deadline=termination,
        action=_str(detail, "instance-action") if "instance-action" in detail else "terminate",
        instance_lifecycle=lifecycle[:64] if isinstance(lifecycle, str) else "",
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


_TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
_LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


def _lifecycle_terminate(detail: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    _expect_transition(detail, _TERMINATING, "terminate")
    return _lifecycle_notice(detail, event_id, event_time, source)


def _lifecycle_launch(detail: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    _expect_transition(detail, _LAUNCHING, "launch")
    return _lifecycle_notice(detail, event_id, event_time, source)


def _expect_transition(detail: dict[str, Any], expected: str, said: str) -> None:
    transition = _str(detail, "LifecycleTransition")
    if transition != expected:
        raise MalformedError(f"detail-type says {said} but LifecycleTransition is {transition[:60]!r}")


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
        raise MalformedError("detail.affectedEntities is missing or not a list")
    ids: dict[InstanceId, None] = {}  # insertion-ordered set: linear however many entities
    for entity in entities:
        if not isinstance(entity, dict):
            raise MalformedError("detail.affectedEntities holds a non-object")
        value = entity.get("entityValue")
        if isinstance(value, str) and is_instance_id(value):
            ids[InstanceId(value)] = None
            if len(ids) > MAX_INSTANCES_PER_MESSAGE:
                raise MalformedError(f"health event names more than {MAX_INSTANCES_PER_MESSAGE} instances")
    if not ids:
        return notices.Ignored(
            event_id=event_id, event_time=event_time, reason="health event names no EC2 instance", source=source
        )
    status = detail.get("statusCode", "open")
    if not isinstance(status, str) or not status:
        raise MalformedError("field 'detail.statusCode' is not a non-empty string")
    return notices.ScheduledChange(
        event_id=event_id,
        event_time=event_time,
        instance_ids=tuple(ids),
        deadline=_time(detail, "startTime", rfc1123) if detail.get("startTime") is not None else None,
        event_type_code=str(detail.get("eventTypeCode", "")),
        status=status.lower(),
        source=source,
    )


_Builder = Callable[[dict[str, Any], str, datetime, str], Notice]

_EVENTBRIDGE: dict[tuple[str, str], _Builder] = {
    ("aws.ec2", "EC2 Spot Instance Interruption Warning"): _spot_warning,
    ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"): _capacity_reservation_warning,
    ("aws.ec2", "EC2 Instance Rebalance Recommendation"): _rebalance,
    ("aws.ec2", "EC2 Instance State-change Notification"): _state_change,
    ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action"): _lifecycle_terminate,
    ("aws.autoscaling", "EC2 Instance-launch Lifecycle Action"): _lifecycle_launch,
    ("aws.health", "AWS Health Event"): _health,
}


# --- Auto Scaling straight to SQS (or via SNS) ---------------------------------------------------------------


def _autoscaling_direct(doc: dict[str, Any], source: str) -> Notice:
    event_id = _str(doc, "RequestId")
    event_time = _time(doc, "Time", rfc3339)
    if doc.get("Event") == "autoscaling:TEST_NOTIFICATION":
        return notices.TestNotification(event_id=event_id, event_time=event_time, source=source)
    if "LifecycleTransition" not in doc:
        return notices.Ignored(
            event_id=event_id,
            event_time=event_time,
            reason=f"auto scaling notification {str(doc.get('Event'))[:60]!r} is not a lifecycle action",
            source=source,
        )
    return _lifecycle_notice(doc, event_id, event_time, source)


def _lifecycle_notice(fields: dict[str, Any], event_id: str, event_time: datetime, source: str) -> Notice:
    transition = _str(fields, "LifecycleTransition")
    instance_id = _instance(fields, "EC2InstanceId")
    destination = fields.get("Destination")
    hook = notices.LifecycleHook(
        group_name=_str(fields, "AutoScalingGroupName"),
        hook_name=_str(fields, "LifecycleHookName"),
        token=_str(fields, "LifecycleActionToken"),
        instance_id=instance_id,
        destination=destination if isinstance(destination, str) else None,
    )
    instance_ids = (instance_id,)
    if transition == _TERMINATING:
        return notices.LifecycleTerminate(
            hook=hook, event_id=event_id, event_time=event_time, instance_ids=instance_ids, source=source
        )
    if transition == _LAUNCHING:
        return notices.LifecycleLaunch(
            hook=hook, event_id=event_id, event_time=event_time, instance_ids=instance_ids, source=source
        )
    return notices.Ignored(
        event_id=event_id, event_time=event_time, reason=f"lifecycle transition {transition[:60]!r}", source=source
    )


# --- field readers ------------------------------------------------------------------------------------------


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        raise MalformedError(f"required field {key!r} is missing")
    if not isinstance(value, str) or not value:
        raise MalformedError(f"field {key!r} is not a non-empty string")
    return value


def _instance(obj: dict[str, Any], key: str) -> InstanceId:
    value = _str(obj, key)
    if not is_instance_id(value):
        raise MalformedError(f"field {key!r} is not an EC2 instance id: {value[:40]!r}")
    return InstanceId(value)


def _time(obj: dict[str, Any], key: str, reader: Callable[[str], datetime]) -> datetime:
    value = obj.get(key)
    if not isinstance(value, str):
        raise MalformedError(f"field {key!r} is missing or not a string")
    try:
        return reader(value)
    except MalformedError as bad:
        raise MalformedError(f"field {key!r} {bad}") from None


def rfc3339(value: str, *, naive_is_utc: bool = False) -> datetime:
    """An RFC 3339 time in UTC (a leap second read as :59). Raises MalformedError saying why not."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        if naive_is_utc and _RFC3339.fullmatch(value + "Z"):
            return rfc3339(value + "Z")
        raise MalformedError(f"is not an RFC 3339 time: {value[:40]!r}")
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = match.groups()
    offset = 0 if sign is None else (1 if sign == "+" else -1) * (int(off_h) * 60 + int(off_m))
    micros = int((fraction or "").ljust(6, "0")[:6])
    return _build(value, (int(year), int(month), int(day), int(hour), int(minute), int(second), micros), offset)


def rfc1123(value: str) -> datetime:
    """An RFC 1123 time (weekday optional, as IMDS writes it) in UTC; `-0000` is UTC. Raises MalformedError."""
    match = _RFC1123.fullmatch(value)
    if match is None:
        raise MalformedError(f"is not an RFC 1123 time with a zone: {value[:40]!r}")
    day, month, year, hour, minute, second, _named, sign, off_h, off_m = match.groups()
    offset = 0 if sign is None else (1 if sign == "+" else -1) * (int(off_h) * 60 + int(off_m))
    fields = (int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second), 0)
    return _build(value, fields, offset)


def _build(value: str, fields: tuple[int, int, int, int, int, int, int], offset_minutes: int) -> datetime:
    year, month, day, hour, minute, second, micros = fields
    if second == 60:
        second = 59  # a leap second: datetime has no :60
    try:
        zone = timezone(timedelta(minutes=offset_minutes))
        local = datetime(year, month, day, hour, minute, second, micros, tzinfo=zone)
        utc = local.astimezone(UTC)
    except OverflowError as exc:
        raise MalformedError(f"is out of range: {value[:40]!r}") from exc
    except ValueError as exc:
        raise MalformedError(f"is not a valid time ({exc}): {value[:40]!r}") from exc
    if not EARLIEST_TIME <= utc < LATEST_TIME:
        raise MalformedError(f"is outside {EARLIEST_TIME.year} to {LATEST_TIME.year - 1}: {value[:40]!r}")
    return utc
