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
        (
            "eventbridge/capacity-reservation-interruption.json",
            Kind.CAPACITY_RESERVATION_INTERRUPTION,
            ["i-0b662ef9931388ba0"],
        ),
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


def test_capacity_reservation_deadline_is_its_termination_time_or_two_minutes() -> None:
    body = json.loads(load("eventbridge/capacity-reservation-interruption.json"))
    body["detail"]["instance-termination-time"] = "2025-06-03T14:21:35Z"  # sooner than two minutes: taken as said
    notice = parsing.parse(json.dumps(body))
    assert isinstance(notice, notices.CapacityReservationInterruption)
    assert notice.deadline == datetime(2025, 6, 3, 14, 21, 35, tzinfo=UTC)
    assert notice.instance_lifecycle == "capacity-block"
    del body["detail"]["instance-termination-time"]
    assert parsing.parse(json.dumps(body)).deadline == datetime(2025, 6, 3, 14, 22, 5, tzinfo=UTC)
    body["detail"]["instance-termination-time"] = "soon"
    bad = parsing.parse(json.dumps(body))
    assert bad.kind is Kind.MALFORMED and "instance-termination-time" in bad.reason  # type: ignore[attr-defined]


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


# --- internal errors are not bad bodies -----------------------------------------------------------------------


def test_a_bug_in_spotq_surfaces_instead_of_becoming_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(event_time: datetime, action: str) -> datetime:
        raise RuntimeError("bug in spotq")

    monkeypatch.setattr(notices, "spot_deadline", broken)
    with pytest.raises(RuntimeError, match="bug in spotq"):
        parsing.parse(load("eventbridge/spot-interruption-warning.json"))


# --- times at the ends of the calendar, leap seconds, zones ---------------------------------------------------


@pytest.mark.parametrize(
    "time",
    [
        "9999-12-31T23:59:59Z",  # + 120 s overflows
        "9999-12-31T23:00:00-05:00",  # overflows turning into UTC
        "0001-01-01T00:00:00+01:00",  # underflows turning into UTC
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2025-06-03T14:20:05+24:00",
        "2025-02-30T14:20:05Z",
    ],
)
def test_times_beyond_the_supported_range_are_malformed_with_a_reason(time: str) -> None:
    notice = parsing.parse(_spot(time=time))
    assert isinstance(notice, notices.Malformed), notice
    assert "'time'" in notice.reason


@pytest.mark.parametrize(
    "start", ["Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 +0100", "Mon, 01 Jan 0001 00:00:00 GMT"]
)
def test_health_start_times_beyond_the_supported_range_are_malformed(start: str) -> None:
    body = json.loads(load("eventbridge/health-scheduled-change.json"))
    body["detail"]["startTime"] = start
    notice = parsing.parse(json.dumps(body))
    assert isinstance(notice, notices.Malformed), notice
    assert "startTime" in notice.reason


def test_leap_second_is_read_as_the_second_before() -> None:
    notice = parsing.parse(_spot(time="2016-12-31T23:59:60Z"))
    assert notice.event_time == datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)
    body = json.loads(load("eventbridge/health-scheduled-change.json"))
    body["detail"]["startTime"] = "Sat, 31 Dec 2016 23:59:60 GMT"
    assert parsing.parse(json.dumps(body)).deadline == datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_lowercase_t_and_z_are_rfc3339_too() -> None:
    notice = parsing.parse(_spot(time="2025-06-03t14:20:05.5z"))
    assert notice.event_time == datetime(2025, 6, 3, 14, 20, 5, 500000, tzinfo=UTC)


@pytest.mark.parametrize("time", ["2025-06-03", "20250603T142005Z", "2025-W23-2T14:20:05Z", "2025-06-03T14:20:05"])
def test_times_that_are_not_rfc3339_are_malformed(time: str) -> None:
    assert isinstance(parsing.parse(_spot(time=time)), notices.Malformed)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("Sun, 15 Jun 2025 15:10:09 -0000", datetime(2025, 6, 15, 15, 10, 9, tzinfo=UTC)),
        ("Sun, 15 Jun 2025 15:10:09 +0000", datetime(2025, 6, 15, 15, 10, 9, tzinfo=UTC)),
        ("Sun, 15 Jun 2025 17:10:09 +0200", datetime(2025, 6, 15, 15, 10, 9, tzinfo=UTC)),
        ("15 Jun 2025 15:10:09 UT", datetime(2025, 6, 15, 15, 10, 9, tzinfo=UTC)),
    ],
)
def test_rfc1123_zones_gmt_ut_and_numeric_including_minus_zero(start: str, expected: datetime) -> None:
    body = json.loads(load("eventbridge/health-scheduled-change.json"))
    body["detail"]["startTime"] = start
    assert parsing.parse(json.dumps(body)).deadline == expected


@pytest.mark.parametrize(
    "start", ["Sun, 15 Jun 2025 15:10:09", "Sun, 15 Jun 25 15:10:09 GMT", "Sun, 15 Jun 2025 15:10:09 EST"]
)
def test_rfc1123_without_a_zone_or_with_a_two_digit_year_is_malformed(start: str) -> None:
    body = json.loads(load("eventbridge/health-scheduled-change.json"))
    body["detail"]["startTime"] = start
    notice = parsing.parse(json.dumps(body))
    assert isinstance(notice, notices.Malformed) and "startTime" in notice.reason


# --- instance ids -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["i-0123456789abcdef0\n", "i-0123456789abcdef0 ", "I-0123456789abcdef0", "i-0123456789", "i-0123456789ABCDEF0"],
)
def test_instance_id_is_i_dash_8_or_17_lowercase_hex_and_nothing_else(value: str) -> None:
    assert not parsing.is_instance_id(value)
    assert isinstance(parsing.parse(_spot(detail__instance_id=value)), notices.Malformed)


def test_health_entity_with_a_trailing_newline_is_not_a_second_instance() -> None:
    body = json.loads(load("eventbridge/health-scheduled-change.json"))
    body["detail"]["affectedEntities"].append({"entityValue": "i-0b662ef9931388ba0\n"})
    assert parsing.parse(json.dumps(body)).instance_ids == ("i-0b662ef9931388ba0", "i-0633ac2b0d9769723")


# --- health events: many entities, status -----------------------------------------------------------------------


def _health(entities: list[object], **detail: object) -> str:
    body = json.loads(load("eventbridge/health-scheduled-change.json"))
    body["detail"]["affectedEntities"] = entities
    body["detail"].update(detail)
    return json.dumps(body)


def test_health_event_naming_up_to_the_cap_keeps_each_instance_once_in_order() -> None:
    ids = [f"i-{n:017x}" for n in range(parsing.MAX_INSTANCES_PER_MESSAGE)]
    entities: list[object] = [{"entityValue": value} for value in ids + ids[:10]]
    notice = parsing.parse(_health(entities))
    assert isinstance(notice, notices.ScheduledChange)
    assert list(notice.instance_ids) == ids


def test_a_one_megabyte_health_event_with_30k_instances_is_refused_by_the_cap() -> None:
    entities: list[object] = [{"entityValue": f"i-{n:08x}"} for n in range(30_000)]
    body = _health(entities)
    assert 900_000 < len(body) <= parsing.MAX_BODY_BYTES
    notice = parsing.parse(body)
    assert isinstance(notice, notices.Malformed)
    assert f"more than {parsing.MAX_INSTANCES_PER_MESSAGE} instances" in notice.reason


@pytest.mark.parametrize(
    ("status_code", "status", "over"),
    [
        ("open", "open", False),
        ("upcoming", "upcoming", False),
        ("closed", "closed", True),
        ("cancelled", "cancelled", True),
        ("Closed", "closed", True),
    ],
)
def test_health_status_code_is_carried_on_the_notice(status_code: str, status: str, over: bool) -> None:
    notice = parsing.parse(_health([{"entityValue": "i-0b662ef9931388ba0"}], statusCode=status_code))
    assert isinstance(notice, notices.ScheduledChange)
    assert notice.status == status and notice.cancelled_or_closed is over


def test_health_event_without_status_code_is_open_and_a_bad_one_is_malformed() -> None:
    body = json.loads(load("eventbridge/health-scheduled-change.json"))
    del body["detail"]["statusCode"]
    notice = parsing.parse(json.dumps(body))
    assert isinstance(notice, notices.ScheduledChange) and notice.status == "open"
    bad = parsing.parse(_health([{"entityValue": "i-0b662ef9931388ba0"}], statusCode=7))
    assert isinstance(bad, notices.Malformed) and "statusCode" in bad.reason


# --- encodings, numbers, envelopes --------------------------------------------------------------------------------


def test_a_bom_is_accepted_the_same_from_str_and_from_bytes() -> None:
    text = "\ufeff" + load("eventbridge/spot-interruption-warning.json")
    from_str, from_bytes = parsing.parse(text), parsing.parse(text.encode())
    assert from_str == from_bytes
    assert from_str.kind is Kind.SPOT_INTERRUPTION


def test_utf16_bytes_are_malformed_as_they_would_be_from_sqs() -> None:
    notice = parsing.parse(load("eventbridge/spot-interruption-warning.json").encode("utf-16"))
    assert isinstance(notice, notices.Malformed) and "UTF-8" in notice.reason


def test_an_unknown_field_with_a_huge_integer_is_malformed_with_a_reason() -> None:
    body = load("eventbridge/spot-interruption-warning.json").replace("{", '{"extra": ' + "7" * 5000 + ",", 1)
    notice = parsing.parse(body)
    assert isinstance(notice, notices.Malformed) and "digits" in notice.reason


def test_a_lone_surrogate_in_an_sns_message_is_malformed() -> None:
    notice = parsing.parse('{"Type": "Notification", "Message": "\\ud800"}')
    assert isinstance(notice, notices.Malformed)


def _sns(body: str, times: int) -> str:
    for n in range(times):
        body = json.dumps({"Type": "Notification", "MessageId": f"m{n}", "Message": body})
    return body


def test_sns_wrappers_are_unwrapped_up_to_the_limit_and_malformed_beyond() -> None:
    body = load("autoscaling-direct/lifecycle-terminate.json")
    assert parsing.parse(_sns(body, parsing.MAX_SNS_WRAPPERS)).kind is Kind.LIFECYCLE_TERMINATE
    notice = parsing.parse(_sns(body, parsing.MAX_SNS_WRAPPERS + 1))
    assert isinstance(notice, notices.Malformed) and "SNS" in notice.reason
    deep = parsing.parse(_sns(body, 12))
    assert isinstance(deep, notices.Malformed)


def test_an_eventbridge_envelope_with_sns_keys_is_read_as_eventbridge() -> None:
    body = json.loads(load("eventbridge/spot-interruption-warning.json"))
    body["Type"] = "Notification"
    body["Message"] = load("autoscaling-direct/lifecycle-terminate.json")
    notice = parsing.parse(json.dumps(body))
    assert notice.kind is Kind.SPOT_INTERRUPTION and notice.instance_ids == ("i-0b662ef9931388ba0",)


@pytest.mark.parametrize(
    ("detail_type", "transition"),
    [
        ("EC2 Instance-launch Lifecycle Action", "autoscaling:EC2_INSTANCE_TERMINATING"),
        ("EC2 Instance-terminate Lifecycle Action", "autoscaling:EC2_INSTANCE_LAUNCHING"),
        ("EC2 Instance-terminate Lifecycle Action", "autoscaling:EC2_INSTANCE_LAUNCH_ERROR"),
    ],
)
def test_lifecycle_detail_type_and_transition_must_agree(detail_type: str, transition: str) -> None:
    body = json.loads(load("eventbridge/lifecycle-terminate.json"))
    body["detail-type"] = detail_type
    body["detail"]["LifecycleTransition"] = transition
    notice = parsing.parse(json.dumps(body))
    assert isinstance(notice, notices.Malformed), notice
    assert "LifecycleTransition" in notice.reason


# --- total for bad input: every field of every sample, replaced by hostile values -------------------------------

HOSTILE: list[object] = [
    None,
    0,
    -1,
    10**4000,
    1.5e308,
    True,
    "",
    "x" * 300,
    [],
    {},
    [{"entityValue": 1}],
    "i-0123456789abcdef0\n",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:60-23:59",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Mon, 01 Jan 0001 00:00:00 +0100",
    "\ud800",
    "autoscaling:EC2_INSTANCE_TERMINATING",
]


def _paths(doc: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _replaced(doc: object, path: tuple[str | int, ...], value: object) -> object:
    copy = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


SAMPLES = sorted(str(p.relative_to(EVENTS)) for p in EVENTS.glob("*/*.json") if p.parent.name != "imds")


@pytest.mark.parametrize("name", SAMPLES)
def test_every_field_replaced_by_a_hostile_value_still_classifies(name: str) -> None:
    doc = json.loads(load(name))
    for path in _paths(doc):
        for value in HOSTILE:
            body = json.dumps(_replaced(doc, path, value))
            for wrapped in (body, _sns(body, 1)):
                notice = parsing.parse(wrapped)
                assert isinstance(notice, notices.Notice), (path, value)
