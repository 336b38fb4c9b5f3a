"""Webhook notifications against real parts: a local HTTP receiver, a real forward proxy (proxy.py), spotq as a
process in queue mode (moto's SQS, the local API server) and in IMDS mode (the IMDS mock).

What is asserted comes from the receiver (what arrived, in which order, with which header), from the proxy's own
access log (the requests went through it), from the cluster (taints) and from /metrics — never from spotq's log,
which is only searched for what must NOT be in it: the URL's token and the proxy's password.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from testenv import ImdsMock, LocalCluster, MotoServer
from testenv.certs import Pki, create_pki
from testenv.spotq import SpotqProcess
from testenv.spotq_imds import SpotqImdsProcess

from .helpers import queue_depth, wait_until

pytestmark = pytest.mark.integration

TAINT = "spotq.io/spot-interruption"
PROXY_USER, PROXY_PASSWORD = "spotq", "pr0xy-" + secrets.token_hex(4)
FIGURES: dict[str, dict[str, float]] = {}


# -- the receiver and the proxy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """An HTTP server in a thread that records every request and answers as told: "ok" (200), "fail" (500) or
    "slow" (200 after `delay` s, longer than spotq's timeout)."""

    def __init__(self, mode: str = "ok", delay: float = 0.0, *, tls: Pki | None = None) -> None:
        self.mode, self.delay = mode, delay
        self.scheme = "https" if tls else "http"
        self.received: list[Received] = []
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                receiver.received.append(
                    Received(
                        time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw)
                    )
                )
                if receiver.mode == "slow":
                    receiver._closing.wait(receiver.delay)
                status = 500 if receiver.mode == "fail" else 200
                with contextlib.suppress(OSError):  # a slow answer's client may have given up: fine
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.serving_cert, tls.serving_key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def bodies(self, node: str | None = None) -> list[Any]:
        return [r.body for r in self.received if node is None or r.body.get("node") == node]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()
    yield got
    got.close()


class ForwardProxy:
    """proxy.py (PyPI `proxy.py`) as a process of its own on loopback, with basic auth and an access log."""

    def __init__(self, workdir: Path) -> None:
        port_file, self.log_path = workdir / "proxy.port", workdir / "proxy.log"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--hostname",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--num-workers",
                "1",
                "--num-acceptors",
                "1",
                "--basic-auth",
                f"{PROXY_USER}:{PROXY_PASSWORD}",
                "--log-level",
                "INFO",
                "--log-file",
                str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until("proxy listening", lambda: port_file.exists() and port_file.read_text().strip(), timeout=30)
        self.port = int(port_file.read_text().strip())

    def url(self, *, credentials: bool = True) -> str:
        auth = f"{PROXY_USER}:{PROXY_PASSWORD}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def access_log(self) -> list[str]:
        """The proxy's access-log lines: `client - METHOD host:port/path - status reason - bytes - ms`."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if "access_log" in line]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ForwardProxy]:
    running = ForwardProxy(tmp_path)
    yield running
    running.close()


# -- helpers -------------------------------------------------------------------------------------------------------


def secret_url(receiver: Receiver, tmp_path: Path) -> tuple[str, Path]:
    """A webhook URL whose path carries a token (as Slack's and Teams' do), written to a file as a mounted Secret."""
    token = "T0KEN" + secrets.token_hex(12)
    path = tmp_path / "webhook-url"
    path.write_text(receiver.url(f"/services/T000/B000/{token}") + "\n")
    return token, path


def spot_warning(instance_id: str) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": secrets.token_hex(8),
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "detail": {"instance-id": instance_id, "instance-action": "terminate"},
        }
    )


def tainted(cluster: LocalCluster, name: str) -> bool:
    node = cluster.get_node(name) or {}
    return any(t["key"] == TAINT for t in node.get("spec", {}).get("taints") or [])


def notification_results(spotq: SpotqProcess) -> dict[str, float]:
    return {r: spotq.metric("spotq_notifications_total", result=r) for r in ("sent", "failed", "dropped")}


def assert_no_secret_in(log: str, *secret_parts: str) -> None:
    for part in secret_parts:
        assert part not in log, f"{part!r} appears in spotq's log"


# -- detection, then the outcome, through the proxy ----------------------------------------------------------------


def test_detection_then_outcome_reach_the_receiver_through_the_proxy_with_the_header(
    local_cluster: LocalCluster,
    moto: MotoServer,
    queue: str,
    spotq_env: dict[str, str],
    namespace: str,
    receiver: Receiver,
    proxy: ForwardProxy,
    tmp_path: Path,
) -> None:
    victim, spare = local_cluster.create_spot_nodes(2)
    local_cluster.wait_nodes_ready([victim.node_name, spare.node_name])
    local_cluster.create_deployment_with_pdb(namespace, "web", 2, max_unavailable=1, termination_grace_period_seconds=1)
    local_cluster.wait_deployments_ready(namespace, ["web"])
    token, url_file = secret_url(receiver, tmp_path)
    marker = secrets.token_hex(6)
    env = {
        **spotq_env,
        "SPOTQ_WEBHOOK__URL_FILE": str(url_file),
        "SPOTQ_WEBHOOK__HEADERS": json.dumps({"X-Spotq-Test": marker}),
        "SPOTQ_WEBHOOK__PROXY": proxy.url(),
        "SPOTQ_WEBHOOK__CLUSTER_NAME": "integration",
        "SPOTQ_DRAIN__SETTLE_SECONDS": "1",
    }
    with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=spot_warning(victim.instance_id))
        wait_until("detection and outcome received", lambda: len(receiver.bodies(victim.node_name)) >= 2, timeout=60)
        wait_until("queue emptied", lambda: queue_depth(moto, queue) == 0, timeout=30)
        results = notification_results(spotq)
        log = spotq.log_tail(100_000)
        assert spotq.stop() == 0

    # The receiver: the detection first, then the outcome, as the generic preset's JSON, with the header.
    first, second = (r for r in receiver.received if r.body["node"] == victim.node_name)
    assert [first.body["reason"], second.body["reason"]] == ["InterruptionNotice", "DrainFinished"]
    assert first.at <= second.at
    for got in (first, second):
        assert got.headers["x-spotq-test"] == marker
        assert got.headers["content-type"] == "application/json"
        assert "proxy-authorization" not in got.headers  # the proxy took its credentials, the webhook saw none
        assert got.path == f"/services/T000/B000/{token}"
        assert got.body["instance_id"] == victim.instance_id and got.body["cluster"] == "integration"
        assert got.body["warning"] is False and got.body["type"] == "Normal" and got.body["source"] == "spotq"
    assert "spot_interruption" in first.body["message"] and "evicted" in second.body["message"]
    # The proxy: both POSTs went through it (its own access log), and it answered them with the receiver's 200.
    through = [line for line in proxy.access_log() if f"POST 127.0.0.1:{receiver.port}/services/" in line]
    assert len(through) == len(receiver.received) == 2 and all(" - 200 OK - " in line for line in through)
    assert results == {"sent": 2.0, "failed": 0.0, "dropped": 0.0}
    # spotq's log says a webhook is configured and where, at most: never its path, token or the proxy's password.
    assert "webhook notifications configured" in log and '"webhook_host": "127.0.0.1"' in log
    assert_no_secret_in(log, token, "/services/T000", PROXY_PASSWORD, marker)


def test_an_https_webhook_goes_through_the_proxy_in_a_connect_tunnel(
    local_cluster: LocalCluster,
    moto: MotoServer,
    queue: str,
    spotq_env: dict[str, str],
    proxy: ForwardProxy,
    tmp_path: Path,
) -> None:
    (victim,) = local_cluster.create_spot_nodes(1)
    local_cluster.wait_nodes_ready([victim.node_name])
    pki = create_pki(tmp_path / "pki")
    https = Receiver(tls=pki)
    try:
        token, url_file = secret_url(https, tmp_path)
        env = {
            **spotq_env,
            "SSL_CERT_FILE": str(pki.ca_cert),  # the receiver's CA, as a cluster's CA bundle would be
            "SPOTQ_WEBHOOK__URL_FILE": str(url_file),
            "SPOTQ_WEBHOOK__PROXY": proxy.url(),
            "SPOTQ_WEBHOOK__TEMPLATE": "teams",
            "SPOTQ_WEBHOOK__HEADERS": json.dumps({"X-Spotq-Test": "tls"}),
            "SPOTQ_DRAIN__SETTLE_SECONDS": "0.5",
        }
        with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:
            moto.client("sqs").send_message(QueueUrl=queue, MessageBody=spot_warning(victim.instance_id))
            wait_until("detection and outcome received", lambda: len(https.received) >= 2, timeout=60)
            results = notification_results(spotq)
            log = spotq.log_tail(100_000)
            assert spotq.stop() == 0  # closes the tunnel: the proxy logs a CONNECT when it ends
    finally:
        https.close()
    first, second = https.received
    cards = [r.body["attachments"][0]["content"] for r in (first, second)]
    assert [c["body"][0]["text"].split(":")[0] for c in cards] == ["InterruptionNotice", "DrainFinished"]
    assert first.headers["x-spotq-test"] == "tls" and "proxy-authorization" not in first.headers
    assert results["sent"] == 2 and results["failed"] == 0
    tunnels = [line for line in proxy.access_log() if f"CONNECT 127.0.0.1:{https.port}" in line]
    assert tunnels, proxy.access_log()  # through the proxy, which saw only the tunnel's end points
    assert not [line for line in proxy.access_log() if "/services/" in line]  # the path stayed inside TLS
    assert_no_secret_in(log, token, "/services/T000", PROXY_PASSWORD)


def test_a_proxy_refusing_spotq_counts_as_failed_and_leaks_nothing(
    local_cluster: LocalCluster,
    moto: MotoServer,
    queue: str,
    spotq_env: dict[str, str],
    receiver: Receiver,
    proxy: ForwardProxy,
    tmp_path: Path,
) -> None:
    (victim,) = local_cluster.create_spot_nodes(1)
    local_cluster.wait_nodes_ready([victim.node_name])
    token, url_file = secret_url(receiver, tmp_path)
    env = {
        **spotq_env,
        "SPOTQ_WEBHOOK__URL_FILE": str(url_file),
        "SPOTQ_WEBHOOK__PROXY": proxy.url(credentials=False),  # the proxy wants credentials: 407
        "SPOTQ_WEBHOOK__REASONS": "InterruptionNotice",
        "SPOTQ_WEBHOOK__RETRIES": "0",
    }
    with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:
        moto.client("sqs").send_message(QueueUrl=queue, MessageBody=spot_warning(victim.instance_id))
        wait_until("tainted", lambda: tainted(local_cluster, victim.node_name), timeout=30)
        wait_until("counted failed", lambda: notification_results(spotq)["failed"] == 1, timeout=30)
        log = spotq.log_tail(100_000)
    assert receiver.received == []
    assert "ProxyAuthenticationFailed" in proxy.log_path.read_text(errors="replace")  # the proxy's side of it
    assert '"error": "HTTP 407"' in log  # the one failure line names the status, nothing of the URL
    assert_no_secret_in(log, token, "/services/T000")


# -- a slow or failing receiver never delays a taint ---------------------------------------------------------------


def _interrupt_and_time(
    cluster: LocalCluster, moto: MotoServer, queue: str, spotq: SpotqProcess, names: list[tuple[str, str]]
) -> list[float]:
    """Send one warning per node, 0.3 s apart (later ones land while the sender is busy and the queue full); the
    seconds from each send until the test sees the node tainted on the API server."""
    sqs = moto.client("sqs")
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    for node, instance in names:
        sqs.send_message(QueueUrl=queue, MessageBody=spot_warning(instance))
        sent[node] = time.monotonic()
        time.sleep(0.3)
    deadline = time.monotonic() + 60
    while len(seen) < len(names) and time.monotonic() < deadline:
        for node, _ in names:
            if node not in seen and tainted(cluster, node):
                seen[node] = time.monotonic()
        time.sleep(0.02)
    assert len(seen) == len(names), f"tainted: {sorted(seen)} of {[n for n, _ in names]}"
    return [seen[node] - sent[node] for node, _ in names]


def _receipt_to_taint(spotq: SpotqProcess) -> tuple[float, float]:
    """spotq's own mean and count of spotq_receipt_to_taint_seconds."""
    count = spotq.metric("spotq_receipt_to_taint_seconds_count")
    return spotq.metric("spotq_receipt_to_taint_seconds_sum") / max(count, 1), count


@pytest.mark.parametrize("mode", ["slow", "fail"])
def test_a_slow_or_failing_receiver_does_not_delay_the_taint(
    local_cluster: LocalCluster,
    moto: MotoServer,
    queue: str,
    spotq_env: dict[str, str],
    mode: str,
    tmp_path: Path,
) -> None:
    per_run = 4
    nodes = local_cluster.create_spot_nodes(2 * per_run)
    local_cluster.wait_nodes_ready([n.node_name for n in nodes])
    pairs = [(n.node_name, n.instance_id) for n in nodes]
    base_env = {**spotq_env, "SPOTQ_DRAIN__SETTLE_SECONDS": "0.5"}

    # Without a webhook: the baseline on this machine, now.
    with SpotqProcess(base_env, log_path=tmp_path / "baseline.log") as spotq:
        baseline_seen = _interrupt_and_time(local_cluster, moto, queue, spotq, pairs[:per_run])
        baseline_mean, counted = _receipt_to_taint(spotq)
        assert counted == per_run
        wait_until("queue emptied", lambda: queue_depth(moto, queue) == 0, timeout=30)

    bad = Receiver(mode, delay=5.0)  # slow: answers after 5 s, spotq gives up after 1 s
    try:
        token, url_file = secret_url(bad, tmp_path)
        env = {
            **base_env,
            "SPOTQ_WEBHOOK__URL_FILE": str(url_file),
            "SPOTQ_WEBHOOK__TIMEOUT_SECONDS": "1",
            "SPOTQ_WEBHOOK__RETRIES": "1",
            "SPOTQ_WEBHOOK__QUEUE_SIZE": "2",
            "SPOTQ_WEBHOOK__STOP_GRACE_SECONDS": "1",
        }
        with SpotqProcess(env, log_path=tmp_path / "webhook.log") as spotq:
            webhook_seen = _interrupt_and_time(local_cluster, moto, queue, spotq, pairs[per_run:])
            webhook_mean, counted = _receipt_to_taint(spotq)
            assert counted == per_run
            # Every notification (a detection and an outcome per node) ends failed or dropped, none sent.
            wait_until(
                "every notification accounted for",
                lambda: sum(notification_results(spotq).values()) == 2 * per_run,
                timeout=60,
            )
            results = notification_results(spotq)
            stopping = time.monotonic()
            assert spotq.stop() == 0
            stop_seconds = time.monotonic() - stopping
            log = (tmp_path / "webhook.log").read_text(errors="replace")
    finally:
        bad.close()

    assert results["sent"] == 0 and results["failed"] >= 1 and results["dropped"] >= 1, results
    assert len(bad.received) >= 2  # it was tried, and retried (retries=1)
    FIGURES[mode] = {
        "baseline_receipt_to_taint_mean_s": round(baseline_mean, 4),
        "webhook_receipt_to_taint_mean_s": round(webhook_mean, 4),
        "baseline_send_to_taint_max_s": round(max(baseline_seen), 3),
        "webhook_send_to_taint_max_s": round(max(webhook_seen), 3),
        "baseline_send_to_taint_median_s": round(statistics.median(baseline_seen), 3),
        "webhook_send_to_taint_median_s": round(statistics.median(webhook_seen), 3),
        "stop_seconds": round(stop_seconds, 2),
        **{f"notifications_{k}": v for k, v in results.items()},
    }
    print(f"\nwebhook figures ({mode}): {json.dumps(FIGURES[mode])}")
    # A taint that waited for one POST would take the 1 s timeout longer (slow) or a retry's back-off (fail).
    assert webhook_mean < baseline_mean + 0.25, FIGURES[mode]
    assert max(webhook_seen) < max(baseline_seen) + 1.0, FIGURES[mode]
    assert stop_seconds < 10  # the stop grace for notifications is 1 s; a stuck receiver does not hold spotq
    assert_no_secret_in(log, token, "/services/T000")


# -- IMDS mode -----------------------------------------------------------------------------------------------------


def test_imds_mode_notifies_at_detection_and_outcome(
    local_cluster: LocalCluster, receiver: Receiver, tmp_path: Path
) -> None:
    (victim,) = local_cluster.create_spot_nodes(1)
    local_cluster.wait_nodes_ready([victim.node_name])
    token, url_file = secret_url(receiver, tmp_path)
    mock = ImdsMock(
        workdir=tmp_path,
        imdsv2=True,
        notice_delay_sec=1,
        rebalance_delay_sec=3600,
        action="terminate",
        instance_id=victim.instance_id,
    )
    with mock:
        env = {
            "SPOTQ_KUBE__KUBECONFIG": str(local_cluster.kubeconfig_path),
            "SPOTQ_IMDS__ENDPOINT": mock.endpoint_url,
            "SPOTQ_IMDS__POLL_INTERVAL_SECONDS": "0.5",
            "SPOTQ_DRAIN__SETTLE_SECONDS": "0.5",
            "NODE_NAME": victim.node_name,
            "SPOTQ_WEBHOOK__URL_FILE": str(url_file),
            "SPOTQ_WEBHOOK__TEMPLATE": "slack",
            "SPOTQ_WEBHOOK__CLUSTER_NAME": "imds-it",
        }
        with SpotqImdsProcess(env, log_path=tmp_path / "spotq.log") as spotq:
            wait_until("two notifications", lambda: len(receiver.received) >= 2, timeout=60)
            results = notification_results(spotq)
            log = spotq.log_tail(100_000)
    first, second = receiver.bodies()[:2]
    assert list(first) == ["text"] and list(second) == ["text"]  # Slack's incoming-webhook shape
    assert first["text"].startswith(f"InterruptionNotice: node {victim.node_name} in imds-it ({victim.instance_id})")
    assert second["text"].startswith(f"DrainFinished: node {victim.node_name} in imds-it")
    assert results["sent"] == 2 and results["failed"] == 0
    assert_no_secret_in(log, token, "/services/T000")
