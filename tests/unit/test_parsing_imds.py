"""IMDS metadata documents → notices: the same time, id and decoding rules as queue messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spotq import notices, parsing_imds
from spotq.notices import InstanceId
from spotq.polling import INSTANCE_ID_PATH
from tests.unit.test_imds_mode import FakeMetadata, RecordingActor, make_watcher, sample

ACTIVE = sample("maintenance-scheduled.json")


@pytest.mark.parametrize(
    "time",
    ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "2025-06-03T14:22:05+24:00"],
)
def test_instance_action_times_beyond_the_supported_range_are_malformed(time: str) -> None:
    (notice,) = parsing_imds.parse_instance_action(f'{{"action": "terminate", "time": "{time}"}}')
    assert isinstance(notice, notices.Malformed) and "no valid time" in notice.reason


def test_instance_action_reads_a_leap_second_a_lowercase_z_and_a_bom() -> None:
    (leap,) = parsing_imds.parse_instance_action('{"action": "terminate", "time": "2016-12-31T23:59:60Z"}')
    assert leap.deadline == datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)
    (lower,) = parsing_imds.parse_instance_action('\ufeff{"action": "stop", "time": "2025-06-03t14:22:05z"}')
    assert isinstance(lower, notices.SpotInterruption) and lower.deadline == datetime(2025, 6, 3, 14, 22, 5, tzinfo=UTC)


def test_a_document_nested_too_deeply_is_malformed_not_raised() -> None:
    for parse in (parsing_imds.parse_instance_action, parsing_imds.parse_rebalance):
        (notice,) = parse("[" * 100_000 + "]" * 100_000)
        assert isinstance(notice, notices.Malformed)
    assert isinstance(parsing_imds.parse_scheduled_maintenance("[" * 100_000)[0], notices.Malformed)


def test_a_huge_integer_in_a_document_is_malformed() -> None:
    (notice,) = parsing_imds.parse_rebalance('{"noticeTime": "2025-06-03T14:11:40Z", "x": ' + "9" * 5000 + "}")
    assert isinstance(notice, notices.Malformed)


@pytest.mark.parametrize(
    ("state", "status"),
    [("active", "open"), ("completed", "closed"), ("canceled", "cancelled"), ("Canceled", "cancelled")],
)
def test_maintenance_events_carry_their_state_as_status(state: str, status: str) -> None:
    (notice,) = parsing_imds.parse_scheduled_maintenance(ACTIVE.replace('"active"', f'"{state}"'))
    assert isinstance(notice, notices.ScheduledChange)
    assert notice.event_id == "instance-event-0d59937288b749b32" and notice.source == "imds"
    assert notice.status == status and notice.cancelled_or_closed is (status != "open")
    assert notice.deadline == datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)


def test_an_active_maintenance_event_is_the_notice_it_always_was() -> None:
    (notice,) = parsing_imds.parse_scheduled_maintenance(ACTIVE)
    assert notice == notices.ScheduledChange(
        event_id="instance-event-0d59937288b749b32",
        deadline=datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC),
        event_type_code="system-reboot",
        source="imds",
    )


def test_an_ended_maintenance_event_needs_no_not_before_but_an_unknown_state_is_malformed() -> None:
    (ended,) = parsing_imds.parse_scheduled_maintenance('[{"EventId": "e-1", "State": "completed"}]')
    assert isinstance(ended, notices.ScheduledChange) and ended.deadline is None and ended.cancelled_or_closed
    (unknown,) = parsing_imds.parse_scheduled_maintenance('[{"EventId": "e-1", "State": "pending", "NotBefore": "x"}]')
    assert isinstance(unknown, notices.Malformed) and "pending" in unknown.reason


@pytest.mark.parametrize(
    "not_before", ["1 Jan 0001 00:00:00 GMT", "31 Dec 9999 23:59:59 GMT", "21 Jan 19 09:00:43 GMT"]
)
def test_maintenance_not_before_beyond_the_supported_range_is_malformed(not_before: str) -> None:
    body = f'[{{"EventId": "e-1", "State": "active", "NotBefore": "{not_before}"}}]'
    (notice,) = parsing_imds.parse_scheduled_maintenance(body)
    assert isinstance(notice, notices.Malformed)


@pytest.mark.parametrize(
    ("served", "taken"),
    [
        ("i-0b662ef9931388ba0\n", "i-0b662ef9931388ba0"),  # IMDS answers without one; a stripped newline is fine
        ("i-0b662ef9", "i-0b662ef9"),
        ("i-0b662ef9931388", None),  # 14 hex: neither the old 8 nor the current 17
        ("i-0b662ef9931388ba0\nx", None),
    ],
)
async def test_the_instance_id_from_imds_follows_the_queue_rule(served: str, taken: str | None) -> None:
    watcher, _ = make_watcher(FakeMetadata({INSTANCE_ID_PATH: served}), RecordingActor())
    await watcher.poll()
    assert watcher.instance_id == taken


@pytest.mark.parametrize("state", ["InService", "Pending", "Standby", "Detached", "Warmed:Stopped", " InService\n"])
def test_a_target_lifecycle_state_other_than_terminated_is_no_notice(state: str) -> None:
    assert parsing_imds.parse_target_lifecycle_state(state) == []


def test_target_lifecycle_state_terminated_is_a_terminate_notice_without_a_hook() -> None:
    (notice,) = parsing_imds.parse_target_lifecycle_state("Terminated\n", InstanceId("i-0b662ef9931388ba0"))
    assert isinstance(notice, notices.AutoScalingTerminating)
    assert notice.kind is notices.Kind.LIFECYCLE_TERMINATE and notice.deadline is None and notice.source == "imds"
    assert notice.instance_ids == ("i-0b662ef9931388ba0",)


@pytest.mark.parametrize("body", ["", "<html>oops</html>", "Terminated please", "x" * 100])
def test_a_target_lifecycle_state_that_is_no_state_is_malformed(body: str) -> None:
    (notice,) = parsing_imds.parse_target_lifecycle_state(body)
    assert isinstance(notice, notices.Malformed) and "target-lifecycle-state" in notice.reason
