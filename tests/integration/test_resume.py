"""A spotq killed mid-drain resumes the drain from the node's own record as soon as its successor is ready, not a
visibility timeout later when SQS hands the message back. Counted from the cluster (pods on the node) and the queue."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess

from .helpers import wait_until
from .test_queue_mode import _sample, node, workload_pods_on

pytestmark = pytest.mark.integration


def test_a_killed_spotq_resumes_its_drain_from_the_node_record_at_once(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    victim, spare = local_cluster.create_spot_nodes(2)
    local_cluster.wait_nodes_ready([victim.node_name, spare.node_name])
    local_cluster.cordon(spare.node_name)  # every pod on the victim first
    # A PDB that allows no disruption: the first process cannot finish the drain before it is killed.
    local_cluster.create_deployment_with_pdb(namespace, "held", 3, min_available=3, termination_grace_period_seconds=1)
    local_cluster.wait_deployments_ready(namespace, ["held"])
    local_cluster.uncordon(spare.node_name)
    body = _sample("eventbridge/spot-interruption-warning.json", **{"i-0b662ef9931388ba0": victim.instance_id})
    body = body.replace("2025-06-03T14:20:05Z", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    sqs = moto.client("sqs")
    # The message stays invisible for 60 s after the kill: only the node's record can bring the drain back sooner.
    env = {**spotq_env, "SPOTQ_QUEUE__VISIBILITY_TIMEOUT_SECONDS": "60"}
    first = SpotqProcess(env, log_path=tmp_path / "first.log").start()
    try:
        sqs.send_message(QueueUrl=queue, MessageBody=body)
        wait_until("the drain under way", lambda: first.metric("spotq_drains_in_flight") >= 1, timeout=30)
        assert first.process is not None
        first.process.kill()  # kill -9: no hand-back, the message stays in flight
        first.process.wait(10)
    finally:
        first.stop()
    killed = time.monotonic()
    record = node(local_cluster, victim.node_name)["metadata"]["annotations"]
    assert record["spotq.io/drain"] == "started"
    assert len(workload_pods_on(local_cluster, namespace, victim.node_name)) == 3
    # The budget now allows the drain; the message is still invisible (received < 60 s ago).
    local_cluster.client.patch(
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/held", {"spec": {"minAvailable": 0}}
    )
    with SpotqProcess(env, log_path=tmp_path / "second.log") as second:
        ready = time.monotonic()
        wait_until(
            "victim drained by the resumed drain",
            lambda: not workload_pods_on(local_cluster, namespace, victim.node_name),
            timeout=20,
        )
        drained = time.monotonic()
        assert second.metric("spotq_drains_resumed_total") == 1
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])[
            "Attributes"
        ]
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"  # SQS has not handed it back yet
        wait_until(
            "drain state finished",
            lambda: node(local_cluster, victim.node_name)["metadata"]["annotations"]["spotq.io/drain"] == "finished",
            timeout=20,
        )
    print(
        f"resumed: drained {drained - ready:.1f}s after the new process was ready ({drained - killed:.1f}s after the kill)"
    )
    assert drained - killed < 45  # well before the 60 s visibility timeout
