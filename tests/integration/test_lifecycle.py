"""Auto Scaling terminate hooks: heartbeats while the node drains, CONTINUE only after the drain."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess
from testenv.workloads import new_instance_id, node_manifest

from .helpers import queue_depth, wait_until

pytestmark = pytest.mark.integration

HOOK_BODY = Path(__file__).parent.parent / "data/events/eventbridge/lifecycle-terminate.json"
GROUP, HOOK = "eks-spot-workers", "node-termination-hook"  # as the sample event names them


class PodsOnNode:
    """Samples the workload pods still on a node (not terminating) every 50 ms, with the time of each sample."""

    def __init__(self, cluster: LocalCluster, namespace: str, node: str) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                pods = cluster.list_pods(namespace, node_name=node)
                self.samples.append((time.time(), len([p for p in pods if not p["metadata"].get("deletionTimestamp")])))
                self._stop.wait(0.05)

        self._thread = threading.Thread(target=sample, daemon=True)

    def __enter__(self) -> PodsOnNode:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def create_group_with_hook(moto: MotoServer) -> None:
    """The group and hook the event names, so the strict stub answers like AWS (a wrong name is refused)."""
    autoscaling = moto.client("autoscaling")
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="lc", ImageId="ami-12c6146b", InstanceType="m5.large"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=GROUP, LaunchConfigurationName="lc", MinSize=0, MaxSize=2, AvailabilityZones=["us-east-1a"]
    )
    autoscaling.put_lifecycle_hook(
        AutoScalingGroupName=GROUP,
        LifecycleHookName=HOOK,
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
        HeartbeatTimeout=300,
    )
    moto.lifecycle_log.strict = True


def test_hook_gets_heartbeats_during_the_drain_and_continue_after_it(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    create_group_with_hook(moto)
    victim, spare = local_cluster.create_spot_nodes(2)
    local_cluster.wait_nodes_ready([victim.node_name, spare.node_name])
    local_cluster.cordon(spare.node_name)  # all pods land on the victim first
    # Pods that take 4 s to stop: the drain lasts several heartbeat intervals.
    local_cluster.create_deployment_with_pdb(
        namespace, "slow", 3, max_unavailable=1, termination_grace_period_seconds=4
    )
    local_cluster.wait_deployments_ready(namespace, ["slow"])
    local_cluster.uncordon(spare.node_name)
    body = HOOK_BODY.read_text().replace("i-0633ac2b0d9769723", victim.instance_id)
    env = {**spotq_env, "SPOTQ_DRAIN__LIFECYCLE_HEARTBEAT_SECONDS": "1"}
    with (
        PodsOnNode(local_cluster, namespace, victim.node_name) as on_victim,
        SpotqProcess(env, log_path=tmp_path / "spotq.log"),
    ):
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=body)
        wait_until("hook completed", moto.completed_lifecycle_actions, timeout=90)
        wait_until("message deleted", lambda: queue_depth(moto, queue) == 0, timeout=30)
    calls = moto.lifecycle_actions()
    assert all(call.accepted for call in calls), [c.error for c in calls]  # the strict stub took every call
    assert {(c.auto_scaling_group_name, c.lifecycle_hook_name, c.instance_id) for c in calls} == {
        (GROUP, HOOK, victim.instance_id)
    }
    kinds = [call.action for call in calls]
    assert kinds.count("RecordLifecycleActionHeartbeat") >= 2, kinds
    assert kinds[-1] == "CompleteLifecycleAction" and kinds.count("CompleteLifecycleAction") == 1
    assert {call.lifecycle_action_token for call in calls} == {"0befcbdb-6ecd-498a-9ff7-ae9b54447cd6"}
    # Drained before CONTINUE: pods were on the node at first, and no sample after CONTINUE saw one.
    completed_at = calls[-1].at
    assert on_victim.samples[0][1] == 3
    assert [n for at, n in on_victim.samples if at >= completed_at] and not [
        n for at, n in on_victim.samples if at >= completed_at and n
    ]
    last_busy = max(at for at, n in on_victim.samples if n)
    assert last_busy < completed_at


def hook_body(instance_id: str, *, launch: bool = False, group: str = GROUP) -> str:
    body = HOOK_BODY.read_text().replace("i-0633ac2b0d9769723", instance_id).replace(GROUP, group)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = body.replace('"time": "2025-06-03T14:19:58Z"', f'"time": "{now}"')  # a launch waits from its event
    if launch:
        body = body.replace("Instance-terminate", "Instance-launch").replace("TERMINATING", "LAUNCHING")
    return body


def completions_for(moto: MotoServer, instance_id: str) -> list[str]:
    return [c.action for c in moto.lifecycle_actions() if c.instance_id == instance_id]


def test_terminate_hooks_that_are_not_ours_are_never_completed(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    create_group_with_hook(moto)
    (ours,) = local_cluster.create_spot_nodes(1)
    foreign = "i-0f0e0d0c0b0a09080"  # no node of this cluster: another cluster's instance in the same account
    env = {**spotq_env, "SPOTQ_POLICY__LIFECYCLE_GROUPS": "eks-spot-*"}
    sqs = moto.client("sqs")
    with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:
        sqs.send_message(QueueUrl=queue, MessageBody=hook_body(foreign))
        sqs.send_message(QueueUrl=queue, MessageBody=hook_body(ours.instance_id, group="other-cluster-workers"))
        wait_until("both messages settled", lambda: queue_depth(moto, queue) == 0, timeout=60)
        assert spotq.metric("spotq_messages_finished_total", kind="lifecycle_terminate") == 2
    # From moto: neither hook got a heartbeat or a completion; they are left to their own handlers.
    assert completions_for(moto, foreign) == [] and completions_for(moto, ours.instance_id) == []


def test_a_launch_hook_waits_for_its_node_instead_of_going_to_the_dead_letter_queue(
    local_cluster: LocalCluster, moto: MotoServer, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    sqs = moto.client("sqs")
    # The stack's queue: a dead-letter queue after 5 receives.
    dlq = sqs.create_queue(QueueName="spotq-launch-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    queue = sqs.create_queue(QueueName="spotq-launch", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    instance_id = new_instance_id()
    env = {**spotq_env, "SPOTQ_QUEUE__URL": queue, "SPOTQ_POLICY__COMPLETE_LIFECYCLE_LAUNCH": "true"}
    with SpotqProcess(env, log_path=tmp_path / "spotq.log"):
        sqs.send_message(QueueUrl=queue, MessageBody=hook_body(instance_id, launch=True))
        # With 1 s retries the old code had dead-lettered it after ~5 s; wait three times that.
        time.sleep(15)
        assert queue_depth(moto, dlq) == 0
        assert completions_for(moto, instance_id) == []  # no CONTINUE before the node exists
        name = f"ip-10-{int(instance_id[-4:], 16) % 250}-9-9.ec2.internal"
        local_cluster.client.create("/api/v1/nodes", node_manifest(name, instance_id))
        wait_until("launch hook completed", lambda: "CompleteLifecycleAction" in completions_for(moto, instance_id), 60)
        wait_until("message deleted", lambda: queue_depth(moto, queue) == 0, timeout=30)
    assert queue_depth(moto, dlq) == 0
