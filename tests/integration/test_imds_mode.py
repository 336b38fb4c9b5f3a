"""IMDS mode against real parts: amazon-ec2-metadata-mock on loopback, and `spotq imds` as a process acting on a
real API server (kwok nodes, a Deployment with a PodDisruptionBudget).

Facts about the mock these tests rely on (read from its source, v1.13.0): timers count from the mock's start, in whole
Unix seconds; `spot/instance-action` is re-stamped on every read (`time` = the read's time + 2 minutes), and so is the
rebalance `noticeTime`; the rebalance delay defaults to 0 (served at once); with --imdsv2 every read needs an unexpired token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from spotq import notices, parsing_imds, polling
from spotq.aws.imds import ImdsClient, ImdsConfig, TokenTimeoutError
from spotq.errors import ImdsError
from spotq.observability import metrics
from testenv import ImdsMock, LocalCluster
from testenv.procs import free_port
from testenv.spotq_imds import SpotqImdsProcess
from testenv.workloads import NodeInfo

from .helpers import wait_until

pytestmark = pytest.mark.integration

ACTION = polling.INSTANCE_ACTION_PATH
REBALANCE = polling.REBALANCE_PATH
SPOT_TAINT = "spotq.io/spot-interruption"
REBALANCE_TAINT = "spotq.io/rebalance-recommendation"
LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
NEVER = 3600  # a mock delay that outlasts any test


async def poll_until(client: ImdsClient, path: str, timeout: float) -> tuple[str, float]:
    """Read `path` every 0.2 s until it holds something; returns the body and how many s it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while (body := await client.get(path)) is None:
            await asyncio.sleep(0.2)
    return body, time.monotonic() - started


def token_requests(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("spotq_imds_token_requests_total", {"result": result}) or 0.0


# -- the client against the real mock ------------------------------------------------------------------------------


async def test_spot_notice_appears_after_the_mock_delay(tmp_path: Path) -> None:
    with ImdsMock(workdir=tmp_path, notice_delay_sec=3, rebalance_delay_sec=NEVER, imdsv2=True) as mock:
        async with aiohttp.ClientSession() as session:
            client = ImdsClient(session, ImdsConfig(endpoint=mock.endpoint_url))
            assert await client.get(ACTION) is None  # 404 until the trigger
            body, _ = await poll_until(client, ACTION, timeout=15)
            served_after = time.monotonic() - mock.spawned_at
            assert await client.get(REBALANCE) is None
            assert await client.get(polling.SCHEDULED_MAINTENANCE_PATH) is None  # not served in spot mode
    # The delay counts from the mock's own start (after the spawn), not from the first read, so a slow start eats into
    # it; and the mock compares whole Unix seconds, so the notice may come up to 1 s before the 3 s are up.
    assert 3 - 1 < served_after < 3 + 5
    (notice,) = parsing_imds.parse_instance_action(body)
    assert isinstance(notice, notices.SpotInterruption) and notice.action == "terminate"
    assert notice.deadline is not None
    # The mock's notice time is two minutes after the read, as real IMDS's is two minutes after the warning.
    assert abs((notice.deadline - datetime.now(UTC)).total_seconds() - 120) < 5


async def test_rebalance_recommendation_comes_before_any_interruption(tmp_path: Path) -> None:
    with ImdsMock(workdir=tmp_path, notice_delay_sec=NEVER, rebalance_delay_sec=2) as mock:
        async with aiohttp.ClientSession() as session:
            client = ImdsClient(session, ImdsConfig(endpoint=mock.endpoint_url))
            body, _ = await poll_until(client, REBALANCE, timeout=15)
            assert await client.get(ACTION) is None
    (notice,) = parsing_imds.parse_rebalance(body)
    assert isinstance(notice, notices.RebalanceRecommendation) and notice.deadline is None
    assert notice.event_time is not None and abs((notice.event_time - datetime.now(UTC)).total_seconds()) < 5


async def test_imdsv2_only_mock_refuses_reads_without_a_token_and_the_client_brings_one(tmp_path: Path) -> None:
    with ImdsMock(workdir=tmp_path, notice_delay_sec=0, rebalance_delay_sec=NEVER, imdsv2=True) as mock:
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(urllib.request.urlopen, mock.endpoint_url + ACTION, timeout=2)
        assert refused.value.code == 401
        async with aiohttp.ClientSession() as session:
            # Even a client allowed to fall back reads with a token when one can be had.
            for fallback in (False, True):
                client = ImdsClient(session, ImdsConfig(endpoint=mock.endpoint_url, imdsv1_fallback=fallback))
                body = await client.get(ACTION)
                assert body is not None and json.loads(body)["action"] == "terminate"


async def test_short_lived_tokens_are_renewed_and_an_expired_one_is_replaced(tmp_path: Path) -> None:
    with ImdsMock(workdir=tmp_path, notice_delay_sec=0, rebalance_delay_sec=NEVER, imdsv2=True) as mock:
        async with aiohttp.ClientSession() as session:
            ok_before = token_requests("ok")
            renewing = ImdsClient(session, ImdsConfig(endpoint=mock.endpoint_url, token_ttl_seconds=1, retries=0))
            for _ in range(8):  # 3.2 s with 1 s tokens: renewed before they expire, never a 401
                assert await renewing.get(ACTION) is not None
                await asyncio.sleep(0.4)
            renewed = token_requests("ok") - ok_before
            assert renewed >= 3

            # A client whose clock stands still keeps its token past the mock's expiry: the mock answers 401,
            # the client takes a fresh token and the read succeeds, all inside one get().
            frozen = ImdsClient(
                session, ImdsConfig(endpoint=mock.endpoint_url, token_ttl_seconds=1, retries=0), clock=lambda: 0.0
            )
            assert await frozen.get(ACTION) is not None
            await asyncio.sleep(1.2)
            ok_before = token_requests("ok")
            assert await frozen.get(ACTION) is not None
            assert token_requests("ok") - ok_before == 1


async def test_unknown_paths_are_404_not_errors(tmp_path: Path) -> None:
    with ImdsMock(workdir=tmp_path, notice_delay_sec=NEVER, rebalance_delay_sec=NEVER) as mock:
        async with aiohttp.ClientSession() as session:
            client = ImdsClient(session, ImdsConfig(endpoint=mock.endpoint_url))
            assert await client.get("/latest/meta-data/no/such/path") is None
            assert await client.get(ACTION) is None


async def test_dead_and_silent_imds_fail_fast_with_a_reason() -> None:
    async with aiohttp.ClientSession() as session:
        dead = ImdsClient(session, ImdsConfig(endpoint=f"http://127.0.0.1:{free_port()}", retries=1))
        with pytest.raises(ImdsError) as raised:
            await dead.get(ACTION)
        assert raised.value.reason == "unreachable"
        with silent_imds() as url:
            silent = ImdsClient(session, ImdsConfig(endpoint=url, request_timeout_seconds=0.3, retries=1))
            started = time.monotonic()
            with pytest.raises(TokenTimeoutError, match="hop limit of 2"):
                await silent.get(ACTION)
            assert time.monotonic() - started < 1.5


# -- `spotq imds` as a process ------------------------------------------------------------------------------------


class _Silent(BaseHTTPRequestHandler):
    """Accepts the connection and answers nothing for a while: IMDS behind a hop limit of 1, seen from a pod."""

    def do_PUT(self) -> None:
        time.sleep(3)  # bounded: each stalled request ends by itself

    def do_GET(self) -> None:
        time.sleep(3)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client gave up first
            super().handle()


class silent_imds:  # noqa: N801 (used as a context manager, like a function)
    def __enter__(self) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_logs(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.fixture
def imds_env(local_cluster: LocalCluster) -> dict[str, str]:
    return {
        "SPOTQ_KUBE__KUBECONFIG": str(local_cluster.kubeconfig_path),
        "SPOTQ_IMDS__POLL_INTERVAL_SECONDS": "0.5",
        "SPOTQ_DRAIN__RETRY_MAX_SECONDS": "1",
    }


@pytest.mark.parametrize("imds", ["dead", "silent"])
def test_unreachable_imds_is_logged_clearly_counted_and_survived(
    local_cluster: LocalCluster, imds_env: dict[str, str], imds: str, tmp_path: Path
) -> None:
    (node,) = local_cluster.create_spot_nodes(1)
    with silent_imds() as silent_url:
        endpoint = f"http://127.0.0.1:{free_port()}" if imds == "dead" else silent_url
        env = {
            **imds_env,
            "NODE_NAME": node.node_name,
            "SPOTQ_IMDS__ENDPOINT": endpoint,
            "SPOTQ_IMDS__REQUEST_TIMEOUT_SECONDS": "0.3",
            "SPOTQ_IMDS__RETRIES": "1",
        }
        reason = "unreachable" if imds == "dead" else "token_timeout"
        with SpotqImdsProcess(env, log_path=tmp_path / "spotq.log", wait_for="/healthz") as spotq:
            wait_until(
                "three failed polls",
                lambda: spotq.metric("spotq_imds_polls_total", result=reason) >= 3,
                timeout=30,
            )
            status, detail = spotq.get("/readyz")
            assert status == 503 and "imds not reachable" in detail
            assert spotq.metric("spotq_imds_reachable") == 0
            assert spotq.get("/healthz")[0] == 200
            assert spotq.process is not None and spotq.process.poll() is None
            if imds == "silent":
                assert spotq.metric("spotq_imds_token_requests_total", result="timeout") >= 3
            assert spotq.stop() == 0
    failures = [line for line in json_logs(tmp_path / "spotq.log") if line["event"] == "imds poll failed"]
    assert len(failures) == 1, failures  # one clear line, not one per poll
    assert failures[0]["reason"] == reason
    if imds == "silent":
        assert "hop limit of 2" in failures[0]["error"] and "hostNetwork" in failures[0]["error"]
    else:
        assert "not reachable" in failures[0]["error"]
    assert not local_cluster.get_node(node.node_name)["spec"].get("unschedulable")  # type: ignore[index]


def workload_pods_on(cluster: LocalCluster, namespace: str, node: str) -> list[dict[str, Any]]:
    return [p for p in cluster.list_pods(namespace, node_name=node) if not p["metadata"].get("deletionTimestamp")]


def taint(node: dict[str, Any], key: str) -> str | None:
    return next((t["effect"] for t in node.get("spec", {}).get("taints") or [] if t["key"] == key), None)


def nodes_with_a_workload(cluster: LocalCluster, namespace: str) -> tuple[NodeInfo, NodeInfo]:
    """Two Spot nodes and a 4-replica Deployment (PDB minAvailable 3) over them: (a node with pods, the other)."""
    first, second = cluster.create_spot_nodes(2, labels={"pool": namespace})
    cluster.create_deployment_with_pdb(
        namespace, "web", 4, min_available=3, node_selector={"pool": namespace}, termination_grace_period_seconds=2
    )
    cluster.wait_deployments_ready(namespace, ["web"], timeout=120)
    # The scheduler may put every replica on one node: the victim is one that has some.
    return (first, second) if workload_pods_on(cluster, namespace, first.node_name) else (second, first)


def wait_drain_recorded(cluster: LocalCluster, node: str) -> None:
    wait_until(
        "drain recorded",
        lambda: (cluster.get_node(node) or {})["metadata"]["annotations"].get("spotq.io/drain") == "finished",
        timeout=30,
    )


def test_a_notice_served_by_the_mock_drains_exactly_this_node_before_its_time(
    local_cluster: LocalCluster, imds_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    victim, neighbour = nodes_with_a_workload(local_cluster, namespace)

    mock = ImdsMock(
        workdir=tmp_path,
        imdsv2=True,
        notice_delay_sec=12,
        rebalance_delay_sec=4,
        action="terminate",
        instance_id=victim.instance_id,
    )
    mock_started = time.monotonic()  # no later than the mock's own clock starts
    with mock:
        env = {
            **imds_env,
            "SPOTQ_IMDS__ENDPOINT": mock.endpoint_url,
            "NODE_NAME": victim.node_name,  # as the chart's downward API sets it
            "SPOTQ_IMDS__TOKEN_TTL_SECONDS": "2",  # many renewals during the test
        }
        with SpotqImdsProcess(env, log_path=tmp_path / "spotq.log") as spotq:
            # First the recommendation: a soft taint only, the node stays schedulable.
            found = wait_until(
                "rebalance taint",
                lambda: taint(n := local_cluster.get_node(victim.node_name) or {}, REBALANCE_TAINT) and n,
                timeout=20,
            )
            assert taint(found, REBALANCE_TAINT) == "PreferNoSchedule"
            if time.monotonic() - mock_started < 11:
                assert not found["spec"].get("unschedulable") and taint(found, SPOT_TAINT) is None

            # Then the interruption: taint, cordon, load-balancer exclusion, drain.
            wait_until(
                "victim tainted and cordoned",
                lambda: (
                    (n := local_cluster.get_node(victim.node_name) or {})
                    and taint(n, SPOT_TAINT) == "NoSchedule"
                    and n["spec"].get("unschedulable")
                    and n["metadata"]["labels"].get(LB_LABEL) == "true"
                ),
                timeout=30,
            )
            wait_until("victim drained", lambda: not workload_pods_on(local_cluster, namespace, victim.node_name), 90)
            drained_at = datetime.now(UTC)
            local_cluster.wait_deployments_ready(namespace, ["web"], timeout=120)
            wait_drain_recorded(local_cluster, victim.node_name)
            time.sleep(2)  # a few more polls of the same (re-stamped) notice
            assert spotq.metric("spotq_imds_polls_total", path="instance_action", result="notice") >= 5
            assert spotq.metric("spotq_imds_notices_total", kind="spot_interruption") == 1
            assert spotq.metric("spotq_imds_notices_total", kind="rebalance_recommendation") == 1
            assert spotq.metric("spotq_imds_polls_total", result="unauthorized") == 0
            assert spotq.metric("spotq_imds_token_requests_total", result="ok") >= 3
            assert spotq.metric("spotq_evictions_total", result="evicted") >= 1
            assert spotq.get("/readyz")[0] == 200
            assert spotq.stop() == 0

    logs = json_logs(tmp_path / "spotq.log")
    received = [line for line in logs if line["event"] == "notice received"]
    assert [line["kind"] for line in received] == ["rebalance_recommendation", "spot_interruption"]
    spot = received[1]
    assert spot["instance"] == victim.instance_id and spot["node"] == victim.node_name
    notice_time = datetime.fromisoformat(spot["deadline"])
    assert drained_at < notice_time  # drained before the interruption's own time
    assert [line["event"] for line in logs].count("drain finished") == 1

    node = local_cluster.get_node(victim.node_name)
    assert node is not None
    record = json.loads(node["metadata"]["annotations"]["spotq.io/spot-interruption"])
    assert datetime.fromisoformat(record["deadline"]) == notice_time - timedelta(seconds=10)  # the safety margin
    # Replacements run beside it, and the neighbour was never touched.
    for pod in local_cluster.list_pods(namespace):
        if not pod["metadata"].get("deletionTimestamp"):
            assert pod["spec"].get("nodeName") == neighbour.node_name
    other = local_cluster.get_node(neighbour.node_name)
    assert other is not None and not other["spec"].get("unschedulable") and not other["spec"].get("taints")


def test_an_auto_scaling_termination_seen_on_imds_drains_the_node_and_completes_no_hook(
    local_cluster: LocalCluster, imds_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    victim, neighbour = nodes_with_a_workload(local_cluster, namespace)
    # The mock's asglifecycle mode serves InService, then Terminated after the delay (and no Spot notice at all).
    mock = ImdsMock(
        workdir=tmp_path,
        mode="asglifecycle",
        imdsv2=True,
        instance_id=victim.instance_id,
        extra_args=("--asg-termination-delay-sec", "4"),
    )
    with mock:
        env = {**imds_env, "SPOTQ_IMDS__ENDPOINT": mock.endpoint_url, "NODE_NAME": victim.node_name}
        with SpotqImdsProcess(env, log_path=tmp_path / "spotq.log") as spotq:
            wait_until(
                "victim tainted and cordoned",
                lambda: (
                    (n := local_cluster.get_node(victim.node_name) or {})
                    and taint(n, "spotq.io/lifecycle-terminate") == "NoSchedule"
                    and n["spec"].get("unschedulable")
                ),
                timeout=30,
            )
            wait_until("victim drained", lambda: not workload_pods_on(local_cluster, namespace, victim.node_name), 90)
            wait_drain_recorded(local_cluster, victim.node_name)
            assert spotq.metric("spotq_imds_polls_total", path="target_lifecycle_state", result="notice") >= 1
            assert spotq.metric("spotq_imds_notices_total", kind="lifecycle_terminate") == 1
            assert spotq.metric("spotq_lifecycle_completions_total") == 0  # IMDS has no hook token to complete
            assert spotq.stop() == 0
    node = local_cluster.get_node(victim.node_name)
    assert node is not None
    record = json.loads(node["metadata"]["annotations"]["spotq.io/lifecycle-terminate"])
    assert record["id"] == "imds-target-lifecycle-terminated"
    other = local_cluster.get_node(neighbour.node_name)
    assert other is not None and not other["spec"].get("unschedulable") and not other["spec"].get("taints")
