"""IMDS mode without I/O: what the metadata documents mean, and a watcher that acts on each notice once."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spotq import handling, imds_mode, notices, parsing_imds, planning, plans, polling, selectors
from spotq.aws.imds import ImdsError
from spotq.draining import DrainReport
from spotq.errors import TransientError
from spotq.kube.nodes import NodeIndex
from spotq.notices import InstanceId, Notice
from spotq.observability import logs, metrics
from spotq.polling import (
    INSTANCE_ACTION_PATH,
    INSTANCE_ID_PATH,
    REBALANCE_PATH,
    SCHEDULED_MAINTENANCE_PATH,
    TARGET_LIFECYCLE_STATE_PATH,
)
from spotq.ports import NodeRef
from spotq.resolving import OwnNode
from spotq.settings import ImdsSettings, Settings
from tests.fakes import FakePods
from tests.unit.test_acting import NODE_JSON, make_actor

IMDS_DOCS = Path(__file__).parent.parent / "data" / "events" / "imds"
INSTANCE = InstanceId("i-0b662ef9931388ba0")  # the instance of NODE_JSON ("n1")


def sample(name: str) -> str:
    return (IMDS_DOCS / name).read_text()


# -- documents ----------------------------------------------------------------------------------------------------


def test_instance_action_deadline_is_its_own_time() -> None:
    (notice,) = parsing_imds.parse_instance_action(sample("spot-instance-action.json"), INSTANCE)
    assert isinstance(notice, notices.SpotInterruption)
    assert notice.action == "terminate" and notice.source == "imds"
    assert notice.deadline == datetime(2025, 6, 3, 14, 22, 5, tzinfo=UTC)
    assert notice.instance_ids == (INSTANCE,)
    assert notice.event_id == "imds-20250603T142205Z"


def test_hibernate_and_stop_are_interruptions_too() -> None:
    for action in ("stop", "hibernate"):
        (notice,) = parsing_imds.parse_instance_action(f'{{"action": "{action}", "time": "2025-06-03T14:22:05Z"}}')
        assert isinstance(notice, notices.SpotInterruption) and notice.action == action
        assert notice.deadline == datetime(2025, 6, 3, 14, 22, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html>", "not a JSON object"),
        ('{"action": "explode", "time": "2025-06-03T14:22:05Z"}', "unknown action"),
        ('{"action": "terminate"}', "no valid time"),
        ('{"action": "terminate", "time": "soon"}', "no valid time"),
    ],
)
def test_bad_instance_action_is_malformed_with_reason(body: str, reason: str) -> None:
    (notice,) = parsing_imds.parse_instance_action(body)
    assert isinstance(notice, notices.Malformed) and reason in notice.reason


def test_rebalance_recommendation_has_no_deadline() -> None:
    (notice,) = parsing_imds.parse_rebalance(sample("rebalance.json"), INSTANCE)
    assert isinstance(notice, notices.RebalanceRecommendation)
    assert notice.event_time == datetime(2025, 6, 3, 14, 11, 40, tzinfo=UTC) and notice.deadline is None
    assert isinstance(parsing_imds.parse_rebalance("{}")[0], notices.Malformed)


def test_scheduled_maintenance_events_with_their_status() -> None:
    (notice,) = parsing_imds.parse_scheduled_maintenance(sample("maintenance-scheduled.json"), INSTANCE)
    assert isinstance(notice, notices.ScheduledChange)
    assert notice.event_id == "instance-event-0d59937288b749b32" and notice.event_type_code == "system-reboot"
    assert notice.deadline == datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)
    canceled = sample("maintenance-scheduled.json").replace('"active"', '"canceled"')
    (ended,) = parsing_imds.parse_scheduled_maintenance(canceled)
    assert isinstance(ended, notices.ScheduledChange) and ended.cancelled_or_closed
    assert parsing_imds.parse_scheduled_maintenance("[]") == []
    # ec2-metadata-mock writes days without a leading zero.
    (mock,) = parsing_imds.parse_scheduled_maintenance(
        '[{"Code": "system-reboot", "EventId": "e-1", "State": "active", "NotBefore": "2 Jan 2026 15:04:05 GMT"}]'
    )
    assert mock.deadline == datetime(2026, 1, 2, 15, 4, 5, tzinfo=UTC)


def test_a_restamped_interruption_is_the_same_notice() -> None:
    (first,) = parsing_imds.parse_instance_action('{"action": "terminate", "time": "2025-06-03T14:22:05Z"}')
    (later,) = parsing_imds.parse_instance_action('{"action": "terminate", "time": "2025-06-03T14:22:09Z"}')
    assert polling.identity(first) == polling.identity(later)
    (a,) = parsing_imds.parse_scheduled_maintenance(sample("maintenance-scheduled.json"))
    b = notices.ScheduledChange(event_id="instance-event-other")
    assert polling.identity(a) != polling.identity(b)


def test_plan_for_an_imds_interruption_finishes_before_its_time() -> None:
    (notice,) = parsing_imds.parse_instance_action(sample("spot-instance-action.json"))
    policy = planning.Policy.from_settings(Settings())
    received = datetime(2025, 6, 3, 14, 20, 10, tzinfo=UTC)
    plan = planning.plan(notice, policy, received)
    assert plan.step_names == ["event", "taint", "cordon", "exclude_from_load_balancers", "drain"]
    assert plan.deadline == datetime(2025, 6, 3, 14, 22, 5, tzinfo=UTC) - policy.safety_margin


def test_node_name_from_setting_else_downward_api() -> None:
    assert imds_mode.node_name(Settings(), {"NODE_NAME": "ip-10-0-0-1"}) == "ip-10-0-0-1"
    explicit = Settings(imds=ImdsSettings(node_name="explicit"))
    assert imds_mode.node_name(explicit, {"NODE_NAME": "x"}) == "explicit"
    assert imds_mode.node_name(Settings(), {"NODE_NAME": ""}) is None


# -- the watcher --------------------------------------------------------------------------------------------------


@dataclass
class FakeMetadata:
    """Serves whatever `documents` holds now; an ImdsError value is raised."""

    documents: dict[str, str | ImdsError] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    async def get(self, path: str) -> str | None:
        self.reads.append(path)
        value = self.documents.get(path)
        if isinstance(value, ImdsError):
            raise value
        return value


@dataclass
class RecordingActor:
    acted: list[tuple[plans.Plan, Notice, str]] = field(default_factory=list)
    fail_next: int = 0
    block: asyncio.Event | None = None

    async def act(
        self, plan: plans.Plan, notice: Notice, node: NodeRef | None, received_loop_time: float, log: logs.Context
    ) -> DrainReport | None:
        assert node is not None
        self.acted.append((plan, notice, node.name))
        if self.fail_next:
            self.fail_next -= 1
            raise TransientError("patch_node: 503 Service Unavailable")
        if self.block is not None:
            await self.block.wait()
        return None


def spot_body(seconds_from_now: float = 120) -> str:
    when = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return f'{{"action": "terminate", "time": "{when:%Y-%m-%dT%H:%M:%SZ}"}}'


def make_watcher(
    imds: FakeMetadata,
    actor: object,
    *,
    node_json: dict | None = NODE_JSON,  # type: ignore[type-arg]
    selector: str = "",
    stale_after: float = 1.0,
    **options: object,
) -> tuple[polling.Watcher, NodeIndex]:
    index = NodeIndex(selectors.parse(selector))
    if node_json is not None:
        index.apply(node_json)
    index.synced.set()
    dry_run = bool(options.pop("dry_run", False))
    handler = handling.Handler(
        resolver=OwnNode(index, "n1"),
        actor=actor,  # type: ignore[arg-type]
        policy=planning.Policy.from_settings(Settings()),
        unknown_instance_fate="delete",
        dry_run=dry_run,
    )
    watcher = polling.Watcher(
        imds=imds,
        nodes=index,
        handler=handler,
        node_name="n1",
        interval_seconds=0.01,
        stale_after_seconds=stale_after,
        **options,  # type: ignore[arg-type]
    )
    return watcher, index


async def poll_and_settle(watcher: polling.Watcher, rounds: int = 1) -> None:
    """Poll like run() does, letting the acting tasks finish between rounds."""
    async with asyncio.TaskGroup() as group:
        for _ in range(rounds):
            handling = [
                group.create_task(watcher._handle(key, entry)) for key, entry in watcher._accept(await watcher.poll())
            ]
            if handling:
                await asyncio.wait(handling)


def sample_value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_notice_served_on_every_poll_is_acted_on_once() -> None:
    imds = FakeMetadata({INSTANCE_ID_PATH: INSTANCE, INSTANCE_ACTION_PATH: spot_body()})
    actor = RecordingActor()
    watcher, _ = make_watcher(imds, actor)
    before = sample_value("spotq_imds_notices_total", kind="spot_interruption")
    for _ in range(5):
        imds.documents[INSTANCE_ACTION_PATH] = spot_body()  # like the mock, a new `time` on every read
        await poll_and_settle(watcher)
    assert len(actor.acted) == 1
    plan, notice, node = actor.acted[0]
    assert node == "n1" and notice.instance_ids == (INSTANCE,) and notice.source == "imds"
    assert plan.drains
    assert sample_value("spotq_imds_notices_total", kind="spot_interruption") - before == 1
    assert watcher.handled() == {"spot_interruption": "done"}


async def test_an_auto_scaling_termination_is_polled_and_drains_once_when_enabled() -> None:
    imds = FakeMetadata({INSTANCE_ID_PATH: INSTANCE, TARGET_LIFECYCLE_STATE_PATH: "InService"})
    actor = RecordingActor()
    watcher, _ = make_watcher(imds, actor, target_lifecycle_state=True)
    await poll_and_settle(watcher, rounds=2)
    assert actor.acted == [] and TARGET_LIFECYCLE_STATE_PATH in imds.reads
    imds.documents[TARGET_LIFECYCLE_STATE_PATH] = "Terminated"
    await poll_and_settle(watcher, rounds=3)
    ((plan, notice, node),) = actor.acted
    assert node == "n1" and notice.kind is notices.Kind.LIFECYCLE_TERMINATE
    assert plan.step_names == ["event", "taint", "cordon", "exclude_from_load_balancers", "drain"]
    # Off: the path is never read.
    off = FakeMetadata({INSTANCE_ID_PATH: INSTANCE, TARGET_LIFECYCLE_STATE_PATH: "Terminated"})
    watcher, _ = make_watcher(off, RecordingActor(), target_lifecycle_state=False)
    await poll_and_settle(watcher)
    assert TARGET_LIFECYCLE_STATE_PATH not in off.reads


async def test_rebalance_then_interruption_each_get_their_own_plan() -> None:
    imds = FakeMetadata({REBALANCE_PATH: sample("rebalance.json")})
    actor = RecordingActor()
    watcher, _ = make_watcher(imds, actor)
    await poll_and_settle(watcher, rounds=2)
    imds.documents[INSTANCE_ACTION_PATH] = spot_body(90)
    await poll_and_settle(watcher, rounds=2)
    kinds = [(notice.kind, plan.step_names) for plan, notice, _ in actor.acted]
    assert kinds == [
        (notices.Kind.REBALANCE_RECOMMENDATION, ["event", "taint"]),
        (notices.Kind.SPOT_INTERRUPTION, ["event", "taint", "cordon", "exclude_from_load_balancers", "drain"]),
    ]
    spot_plan, spot, _ = actor.acted[1]
    assert spot.deadline is not None and spot_plan.deadline == spot.deadline - timedelta(seconds=10)


async def test_acting_that_failed_is_tried_again_at_the_next_poll() -> None:
    imds = FakeMetadata({INSTANCE_ACTION_PATH: spot_body()})
    actor = RecordingActor(fail_next=1)
    watcher, _ = make_watcher(imds, actor)
    await poll_and_settle(watcher)
    assert watcher.handled() == {"spot_interruption": "retry"}
    await poll_and_settle(watcher, rounds=3)
    assert len(actor.acted) == 2
    # The retry keeps the first sighting's deadline, not a re-stamped one.
    assert actor.acted[0][1] == actor.acted[1][1]
    assert watcher.handled() == {"spot_interruption": "done"}


async def test_a_node_not_registered_yet_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    imds = FakeMetadata({INSTANCE_ACTION_PATH: spot_body()})
    actor = RecordingActor()
    watcher, index = make_watcher(imds, actor, node_json=None)
    with caplog.at_level(logging.WARNING, logger="spotq.imds"):
        await poll_and_settle(watcher, rounds=3)
    assert actor.acted == []
    assert [r.getMessage() for r in caplog.records].count(
        "node not in the cluster (yet): trying again at the next poll"
    ) == 1
    index.apply(NODE_JSON)
    await poll_and_settle(watcher)
    assert len(actor.acted) == 1


async def test_a_node_out_of_scope_is_left_alone() -> None:
    imds = FakeMetadata({INSTANCE_ACTION_PATH: spot_body()})
    actor = RecordingActor()
    watcher, _ = make_watcher(imds, actor, selector="lifecycle=Ec2Spot")  # NODE_JSON has no such label
    await poll_and_settle(watcher, rounds=2)
    assert actor.acted == [] and watcher.handled() == {"spot_interruption": "done"}


async def test_dry_run_acts_on_nothing() -> None:
    imds = FakeMetadata({INSTANCE_ACTION_PATH: spot_body()})
    actor = RecordingActor()
    watcher, _ = make_watcher(imds, actor, dry_run=True)
    await poll_and_settle(watcher, rounds=2)
    assert actor.acted == [] and watcher.handled() == {"spot_interruption": "done"}


async def test_scheduled_maintenance_is_read_only_when_enabled() -> None:
    imds = FakeMetadata({SCHEDULED_MAINTENANCE_PATH: sample("maintenance-scheduled.json")})
    actor = RecordingActor()
    off, _ = make_watcher(imds, actor)
    await poll_and_settle(off)
    assert SCHEDULED_MAINTENANCE_PATH not in imds.reads and actor.acted == []
    on, _ = make_watcher(imds, actor, scheduled_maintenance=True)
    await poll_and_settle(on, rounds=2)
    assert [notice.kind for _, notice, _ in actor.acted] == [notices.Kind.SCHEDULED_CHANGE]


async def test_failing_imds_is_logged_once_counted_and_makes_the_watcher_unreachable(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    imds = FakeMetadata({INSTANCE_ID_PATH: INSTANCE})
    watcher, _ = make_watcher(imds, RecordingActor(), stale_after=30)
    loop = asyncio.get_running_loop()
    await watcher.poll()
    answered_at = loop.time()
    assert watcher.reachable()
    # A fake clock for the loop: FakeMetadata answers without suspending, so no timer is due while it is moved.
    monkeypatch.setattr(loop, "time", lambda: answered_at + 20)
    hop = ImdsError("IMDS token request timed out: hop limit of 2 or hostNetwork", reason="token_timeout")
    imds.documents[INSTANCE_ACTION_PATH] = hop
    before = sample_value("spotq_imds_polls_total", path="instance_action", result="token_timeout")
    with caplog.at_level(logging.INFO, logger="spotq.imds"):
        read_before = len(imds.reads)
        for _ in range(3):
            assert await watcher.poll() == []
        # IMDS down: the paths after the failing one are not read in that round.
        assert imds.reads[read_before:] == [INSTANCE_ACTION_PATH] * 3
        assert sample_value("spotq_imds_reachable") == 0
        assert watcher.reachable()  # 20 s of failed polls: still within stale_after_seconds of the last answer
        monkeypatch.setattr(loop, "time", lambda: answered_at + 31)
        assert not watcher.reachable()
        del imds.documents[INSTANCE_ACTION_PATH]
        await watcher.poll()
    monkeypatch.undo()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("imds poll failed") == 1 and "imds answering again" in messages
    failed = next(r for r in caplog.records if r.getMessage() == "imds poll failed")
    assert "hop limit of 2" in failed.error  # type: ignore[attr-defined]
    assert sample_value("spotq_imds_polls_total", path="instance_action", result="token_timeout") - before == 3
    assert watcher.reachable() and sample_value("spotq_imds_reachable") == 1


async def test_malformed_document_is_counted_each_poll_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    imds = FakeMetadata({INSTANCE_ACTION_PATH: '{"action": "terminate"}'})
    actor = RecordingActor()
    watcher, _ = make_watcher(imds, actor)
    before = sample_value("spotq_imds_polls_total", path="instance_action", result="malformed")
    with caplog.at_level(logging.WARNING, logger="spotq.imds"):
        await poll_and_settle(watcher, rounds=3)
    assert sample_value("spotq_imds_polls_total", path="instance_action", result="malformed") - before == 3
    assert [r.getMessage() for r in caplog.records].count("malformed imds document") == 1
    assert actor.acted == [] and watcher.reachable()


async def test_run_stops_promptly_even_while_a_drain_is_running() -> None:
    imds = FakeMetadata({INSTANCE_ACTION_PATH: spot_body()})
    actor = RecordingActor(block=asyncio.Event())  # a drain that never ends
    watcher, _ = make_watcher(imds, actor)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    async with asyncio.timeout(2):
        while not actor.acted:
            await asyncio.sleep(0.01)
        polled = imds.reads.count(INSTANCE_ACTION_PATH)
        while imds.reads.count(INSTANCE_ACTION_PATH) < polled + 3:  # more polls of the same notice
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(1):
        await task
    assert len(actor.acted) == 1


async def test_with_the_real_actor_marks_and_drain_happen_once() -> None:
    pods = FakePods()
    for name in ("a", "b"):
        pods.add("n1", name)
    actor, writer, events, _ = make_actor(pods)
    imds = FakeMetadata({INSTANCE_ID_PATH: INSTANCE, INSTANCE_ACTION_PATH: spot_body()})
    watcher, _ = make_watcher(imds, actor)
    index = actor._index  # the actor's index holds the node its writer patches
    index.synced.set()
    watcher._nodes = index
    await poll_and_settle(watcher, rounds=5)
    node = writer.node
    assert node["spec"]["unschedulable"] is True
    assert [t["key"] for t in node["spec"]["taints"]] == ["spotq.io/spot-interruption"]
    assert node["metadata"]["annotations"]["spotq.io/drain"] == "finished"
    assert pods.evictions_of("a") == [None] and pods.evictions_of("b") == [None]
    assert events.reasons.count("InterruptionNotice") == 1 and events.reasons.count("DrainFinished") == 1
