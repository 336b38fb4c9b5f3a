"""Every body shape that really arrives, and the ways bodies go wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spotq import notices, parsing
from spotq.notices import Kind

EVENTS = Path(__file__).parent.parent / "data" / "events"


def load(name: str) -> str:
    return (EVENTS / name).read_text()


@pytest.mark.parametrize(
    ("name", "kind", "instances"),
    [
        ("eventbridge/spot-interruption-warning.json", Kind.SPOT_INTERRUPTION, ["i-0b662ef9931388ba0"]),
        ("eventbridge/rebalance-recommendation.json", Kind.REBALANCE_RECOMMENDATION, ["i-0b662ef9931388ba0"]),
        ("eventbridge/state-change-shutting-down.json", Kind.STATE_CHANGE, ["i-0b662ef9931388ba0"]),
        ("eventbridge/lifecycle-terminate.json", Kind.LIFECYCLE_TERMINATE, ["i-0633ac2b0d9769723"]),
        (
            "eventbridge/health-scheduled-change.json",
            Kind.SCHEDULED_CHANGE,
            ["i-0b662ef9931388ba0", "i-0633ac2b0d9769723"],
        ),
        ("autoscaling-direct/lifecycle-terminate.json", Kind.LIFECYCLE_TERMINATE, ["i-0633ac2b0d9769723"]),
        ("autoscaling-direct/test-notification.json", Kind.TEST_NOTIFICATION, []),
    ],
)
def test_every_sample_body_is_classified(name: str, kind: Kind, instances: list[str]) -> None:
    notice = parsing.parse(load(name))
    assert notice.kind is kind
    assert list(notice.instance_ids) == instances


def test_spot_warning_deadline_is_event_time_plus_two_minutes() -> None:
    notice = parsing.parse(load("eventbridge/spot-interruption-warning.json"))
    assert notice.event_time == datetime(2025, 6, 3, 14, 20, 5, tzinfo=UTC)
    assert notice.deadline == datetime(2025, 6, 3, 14, 22, 5, tzinfo=UTC)
    assert notice.event_id == "1e5527d7-bb36-4607-3370-4164db56a40e"


def test_spot_hibernate_has_no_lead_time() -> None:
    body = json.loads(load("eventbridge/spot-interruption-warning.json"))
    body["detail"]["instance-action"] = "hibernate"
    notice = parsing.parse(json.dumps(body))
    assert notice.deadline == notice.event_time


def test_health_event_deadline_is_its_rfc1123_start_time() -> None:
    notice = parsing.parse(load("eventbridge/health-scheduled-change.json"))
    assert notice.deadline == datetime(2025, 6, 15, 15, 10, 9, tzinfo=UTC)


def test_health_event_for_another_service_is_ignored() -> None:
    body = json.loads(load("eventbridge/health-scheduled-change.json"))
    body["detail"]["service"] = "RDS"
    notice = parsing.parse(json.dumps(body))
    assert isinstance(notice, notices.Ignored)
    assert "RDS" in notice.reason


def test_lifecycle_action_carries_the_hook() -> None:
    notice = parsing.parse(load("eventbridge/lifecycle-terminate.json"))
    assert isinstance(notice, notices.LifecycleTerminate)
    assert notice.hook.group_name == "eks-spot-workers"
    assert notice.hook.hook_name == "node-termination-hook"
    assert notice.hook.token == "0befcbdb-6ecd-498a-9ff7-ae9b54447cd6"


def test_direct_lifecycle_with_milliseconds_parses() -> None:
    notice = parsing.parse(load("autoscaling-direct/lifecycle-terminate.json"))
    assert notice.event_time == datetime(2025, 6, 3, 14, 19, 58, 904000, tzinfo=UTC)


@pytest.mark.parametrize(
    "name", ["autoscaling-direct/lifecycle-terminate.json", "autoscaling-direct/test-notification.json"]
)
def test_sns_wrapped_autoscaling_notification_is_unwrapped(name: str) -> None:
    wrapped = json.dumps({"Type": "Notification", "MessageId": "x", "Message": load(name)})
    assert parsing.parse(wrapped).kind is parsing.parse(load(name)).kind


def test_launch_lifecycle_is_its_own_kind() -> None:
    body = json.loads(load("eventbridge/lifecycle-terminate.json"))
    body["detail-type"] = "EC2 Instance-launch Lifecycle Action"
    body["detail"]["LifecycleTransition"] = "autoscaling:EC2_INSTANCE_LAUNCHING"
    assert parsing.parse(json.dumps(body)).kind is Kind.LIFECYCLE_LAUNCH


def test_instance_ids_come_from_detail_not_resources() -> None:
    body = json.loads(load("eventbridge/spot-interruption-warning.json"))
    body["resources"] = ["arn:aws:ec2:us-east-1b:instance/i-1111111111111111f"]
    assert parsing.parse(json.dumps(body)).instance_ids == ("i-0b662ef9931388ba0",)


def test_unknown_fields_and_key_order_are_tolerated() -> None:
    body = json.loads(load("eventbridge/spot-interruption-warning.json"))
    body["extra"] = {"nested": [1, 2]}
    reordered = dict(reversed(list(body.items())))
    assert parsing.parse(json.dumps(reordered)).kind is Kind.SPOT_INTERRUPTION


def test_unknown_detail_type_is_ignored() -> None:
    body = json.loads(load("eventbridge/spot-interruption-warning.json"))
    body["detail-type"] = "EC2 Fleet Error"
    notice = parsing.parse(json.dumps(body))
    assert isinstance(notice, notices.Ignored)
    assert "EC2 Fleet Error" in notice.reason


def test_running_state_change_parses_as_state_change() -> None:
    body = json.loads(load("eventbridge/state-change-shutting-down.json"))
    body["detail"]["state"] = "running"
    notice = parsing.parse(json.dumps(body))
    assert isinstance(notice, notices.StateChange) and not notice.leaving


def _spot(**changes: object) -> str:
    body = json.loads(load("eventbridge/spot-interruption-warning.json"))
    for path, value in changes.items():
        target = body
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[key.replace("_", "-")]
        if value is None:
            del target[keys[-1].replace("_", "-")]
        else:
            target[keys[-1].replace("_", "-")] = value
    return json.dumps(body)


MALFORMED = {
    "not json": "this is not json",
    "truncated json": '{"version": "0", "detail": {',
    "json list": "[1, 2, 3]",
    "json string": '"hello"',
    "empty": "",
    "missing time": _spot(time=None),
    "time not a time": _spot(time="yesterday"),
    "time without zone": _spot(time="2025-06-03T14:20:05"),
    "detail not object": _spot(detail="oops"),
    "missing instance id": _spot(detail__instance_id=None),
    "instance id wrong type": _spot(detail__instance_id=42),
    "instance id not an instance": _spot(detail__instance_id="vol-0123456789abcdef0"),
    "missing instance action": _spot(detail__instance_action=None),
    "id wrong type": _spot(id=["x"]),
    "deep nesting": '{"detail-type": "x", "a": ' + "[" * 5000 + "]" * 5000 + "}",
    "moderate nesting": '{"detail": {"x": ' + "[" * 20 + "1" + "]" * 20 + "}}",
    "huge body": json.dumps({"detail-type": "x", "pad": "x" * (parsing.MAX_BODY_BYTES + 1)}),
    "sns message not string": json.dumps({"Type": "Notification", "Message": {"a": 1}}),
    "sns message not json": json.dumps({"Type": "Notification", "Message": "nope"}),
    "lifecycle without token": json.dumps(
        {
            k: v
            for k, v in json.loads(load("autoscaling-direct/lifecycle-terminate.json")).items()
            if k != "LifecycleActionToken"
        }
    ),
    "health start time bad": json.dumps(
        {
            **json.loads(load("eventbridge/health-scheduled-change.json")),
            "detail": {
                **json.loads(load("eventbridge/health-scheduled-change.json"))["detail"],
                "startTime": "not a date",
            },
        }
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bodies_are_classified_never_raised(case: str) -> None:
    notice = parsing.parse(MALFORMED[case])
    assert isinstance(notice, notices.Malformed), notice
    assert notice.reason


def test_invalid_utf8_bytes_are_malformed() -> None:
    assert isinstance(parsing.parse(b"\xff\xfe{"), notices.Malformed)


def test_foreign_json_object_is_ignored() -> None:
    notice = parsing.parse('{"hello": "world"}')
    assert isinstance(notice, notices.Ignored)
