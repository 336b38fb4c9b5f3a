"""What an operator scrapes and probes: /metrics (valid exposition, promtool-clean), /healthz, /readyz."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from testenv import LocalCluster, MotoServer, tools, write_kubeconfig
from testenv.spotq import SpotqProcess

from .helpers import queue_depth, wait_until

pytestmark = pytest.mark.integration


def test_metrics_pass_promtool_after_real_work(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    victim, spare = local_cluster.create_spot_nodes(2)
    local_cluster.wait_nodes_ready([victim.node_name, spare.node_name])
    local_cluster.create_deployment_with_pdb(namespace, "web", 2, max_unavailable=1, termination_grace_period_seconds=1)
    local_cluster.wait_deployments_ready(namespace, ["web"])
    body = json.dumps(
        {
            "version": "0",
            "id": "e-1",
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "time": "2030-01-01T00:00:00Z",
            "detail": {"instance-id": victim.instance_id, "instance-action": "terminate"},
        }
    )
    with SpotqProcess(spotq_env, log_path=tmp_path / "spotq.log") as spotq:
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=body)
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody="garbage")
        wait_until("both messages settled", lambda: queue_depth(moto, queue) == 0, timeout=60)
        status, text = spotq.get("/metrics")
        assert status == 200
        assert spotq.get("/healthz") == (200, "ok\n")
        assert spotq.get("/readyz")[0] == 200
    for family in ("spotq_messages_received_total", "spotq_receipt_to_taint_seconds_bucket", "spotq_evictions_total"):
        assert family in text
    assert 'outcome="malformed"' in text
    # No label may name a node, pod or instance: cardinality stays bounded however big the cluster.
    assert victim.node_name not in text and victim.instance_id not in text
    check = subprocess.run(
        [str(tools.tool("promtool")), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_readyz_fails_until_the_node_index_syncs(
    local_cluster: LocalCluster, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once the socket closes
    kubeconfig = write_kubeconfig(
        tmp_path / "dead.kubeconfig",
        server_url=dead,
        ca_path=local_cluster.ca_path,
        user={"token": "x"},
        user_name="nobody",
        namespace="default",
    )
    env = {**spotq_env, "SPOTQ_KUBE__KUBECONFIG": str(kubeconfig)}
    with SpotqProcess(env, log_path=tmp_path / "spotq.log", wait_for="/healthz") as spotq:
        status, text = spotq.get("/readyz")
        assert status == 503 and "node index not synced" in text
        assert spotq.process is not None and spotq.process.poll() is None  # alive, retrying, not crashed
        # The node watch keeps relisting (counted by reason), and says so in its log.
        restarts = 'spotq_watch_restarts_total{reason="network",resource="nodes"}'
        wait_until("counted node-watch retries", lambda: restarts in spotq.get("/metrics")[1], timeout=15)
        wait_until("a logged retry", lambda: "watch interrupted, relisting" in spotq.log_tail(50), timeout=15)
