"""Auto Scaling terminate hooks: heartbeats while the node drains, CONTINUE only after the drain."""

from __future__ import annotations

from pathlib import Path

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess

from .helpers import queue_depth, wait_until

pytestmark = pytest.mark.integration

HOOK_BODY = Path(__file__).parent.parent / "data/events/eventbridge/lifecycle-terminate.json"


def test_hook_gets_heartbeats_during_the_drain_and_continue_after_it(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
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
    with SpotqProcess(env, log_path=tmp_path / "spotq.log"):
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=body)
        wait_until("hook completed", moto.completed_lifecycle_actions, timeout=90)
        wait_until("message deleted", lambda: queue_depth(moto, queue) == 0, timeout=30)
    calls = moto.lifecycle_actions()
    kinds = [call.action for call in calls]
    assert kinds.count("RecordLifecycleActionHeartbeat") >= 2, kinds
    assert kinds[-1] == "CompleteLifecycleAction" and kinds.count("CompleteLifecycleAction") == 1
    assert {call.lifecycle_action_token for call in calls} == {"0befcbdb-6ecd-498a-9ff7-ae9b54447cd6"}
    assert not [p for p in local_cluster.list_pods(namespace, node_name=victim.node_name)]  # drained before CONTINUE
