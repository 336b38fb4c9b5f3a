"""Message fates at the edges of spotq's life, counted at moto's SQS endpoint over HTTP, never from spotq's logs:
a message that finishes during SIGTERM is deleted, one SQS hands out while spotq stops is visible again at once, and
/readyz answers 503 promptly when the endpoint stops answering.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testenv import LocalCluster, MotoServer
from testenv.spotq import SpotqProcess

from .helpers import wait_until

pytestmark = pytest.mark.integration


def queue_counts(moto: MotoServer, url: str) -> tuple[int, int]:
    """(visible, in flight) as SQS reports them."""
    attributes = moto.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def spot_warning(instance_id: str) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": f"warning-{instance_id}",
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "account": "123456789012",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": "us-east-1",
            "resources": [f"arn:aws:ec2:us-east-1a:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "instance-action": "terminate"},
        }
    )


def wait_for_log(path: Path, line: str, timeout: float = 10) -> None:
    wait_until(f"log line {line!r}", lambda: line in path.read_text(errors="replace"), timeout=timeout, every=0.05)


def test_a_message_that_finishes_during_sigterm_is_deleted(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    (victim,) = local_cluster.create_spot_nodes(1)
    local_cluster.wait_nodes_ready([victim.node_name])
    # A PDB that allows no disruption holds the drain until the test lifts it, after SIGTERM.
    local_cluster.create_deployment_with_pdb(
        namespace,
        "held",
        1,
        min_available=1,
        termination_grace_period_seconds=1,
        node_selector={"kubernetes.io/hostname": victim.node_name},
    )
    local_cluster.wait_deployments_ready(namespace, ["held"])
    log_path = tmp_path / "spotq.log"
    spotq = SpotqProcess({**spotq_env, "SPOTQ_QUEUE__STOP_GRACE_SECONDS": "25"}, log_path=log_path).start()
    try:
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=spot_warning(victim.instance_id))
        wait_until("the drain under way", lambda: spotq.metric("spotq_drains_in_flight") >= 1, timeout=30)
        assert spotq.process is not None
        spotq.process.send_signal(signal.SIGTERM)
        wait_for_log(log_path, "stopping: waiting for in-flight work")
        local_cluster.client.delete(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/held")
        assert spotq.process.wait(40) == 0
    finally:
        spotq.stop()
    # Deleted: neither handed back as unfinished (1, 0) nor left to come back after its visibility (0, 1).
    assert queue_counts(moto, queue) == (0, 0)


def test_a_message_handed_out_while_spotq_stops_is_visible_again_at_once(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    log_path = tmp_path / "spotq.log"
    # 20 s long polls, as in production: SIGTERM arrives while every receiver waits on one.
    spotq = SpotqProcess({**spotq_env, "SPOTQ_QUEUE__WAIT_SECONDS": "20"}, log_path=log_path).start()
    try:
        assert spotq.process is not None
        spotq.process.send_signal(signal.SIGTERM)
        wait_for_log(log_path, "stopping: receiving ends")
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=spot_warning("i-0123456789abcdef0"))
        assert spotq.process.wait(40) == 0
    finally:
        spotq.stop()
    # Visible now, for the next replica; not hidden for the 60 s visibility of a receive nobody answers.
    assert queue_counts(moto, queue) == (1, 0)


class BlackHole:
    """A TCP relay to moto that can stop answering: bytes in either direction are dropped, connections kept open."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.hanging = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.hanging.is_set():
                continue  # accepted, never answered
            upstream = socket.create_connection(self._target)
            self._sockets.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self.hanging.is_set():
                    sink.sendall(data)

    def close(self) -> None:
        self._closed.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def test_readyz_answers_503_promptly_when_sqs_stops_answering(
    local_cluster: LocalCluster, moto: MotoServer, queue: str, spotq_env: dict[str, str], tmp_path: Path
) -> None:
    relay = BlackHole(moto.port)
    env = {**spotq_env, "AWS_ENDPOINT_URL": relay.url, "SPOTQ_AWS__ENDPOINT_URL": relay.url}
    try:
        with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:
            assert spotq.get("/readyz")[0] == 200
            relay.hanging.set()
            outage = time.monotonic()
            answers: list[tuple[int, float]] = []

            def unready() -> bool:
                asked = time.monotonic()
                status, _ = spotq.get("/readyz")  # 5 s client timeout: a hung probe reads as status 0
                answers.append((status, time.monotonic() - asked))
                return status == 503

            wait_until("/readyz 503", unready, timeout=15, every=0.5)
            assert time.monotonic() - outage < 12  # a long poll (1 s here) + 5 s margin + the 2 s probe
            assert max(took for _, took in answers) < 3, answers  # every answer prompt, none hanging
            assert {status for status, _ in answers} <= {200, 503}, answers
            started = time.monotonic()
            assert spotq.stop() == 0
            assert time.monotonic() - started < 20  # hung receives are cut off, not waited out
    finally:
        relay.close()
