"""The periodic audit in `spotq run` (SPOTQ_AUDIT__INTERVAL_SECONDS), against the real API server and moto: the
findings appear on /metrics by check and severity, and drop to 0 once the workload is fixed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testenv import LocalCluster
from testenv.spotq import SpotqProcess
from testenv.workloads import deployment_manifest, pdb_manifest

from .helpers import wait_until

pytestmark = pytest.mark.integration
RUN = "audit.spotq.test/periodic"


def gauges(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("spotq_audit_")
    }


def finding_count(text: str, check: str, severity: str) -> float | None:
    return gauges(text).get(("spotq_audit_findings", (("check", check), ("severity", severity))))


def test_the_periodic_audit_publishes_findings_and_clears_them_when_fixed(
    local_cluster: LocalCluster, spotq_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    (node,) = local_cluster.create_spot_nodes(1, labels={RUN: run})
    local_cluster.wait_nodes_ready([node.node_name])
    apps = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    local_cluster.client.create(apps, deployment_manifest("lonely", 1, node_selector={RUN: run}))
    local_cluster.wait_deployments_ready(namespace, ["lonely"])
    env = {**spotq_env, "SPOTQ_AUDIT__INTERVAL_SECONDS": "1", "SPOTQ_AUDIT__NAMESPACES": namespace,
           "SPOTQ_KUBE__NODE_SELECTOR": f"{RUN}={run}"}  # fmt: skip
    with SpotqProcess(env, log_path=tmp_path / "spotq.log") as spotq:

        def scraped() -> str:
            status, text = spotq.get("/metrics")
            assert status == 200
            return text

        def scraped_when(*wanted: tuple[str, str, float]) -> str | None:
            text = scraped()
            return text if all(finding_count(text, c, s) == n for c, s, n in wanted) else None

        text = wait_until(
            "the audit's findings on /metrics", lambda: scraped_when(("single-replica", "high", 1)), timeout=60
        )
        seen = gauges(text)
        assert finding_count(text, "no-pdb", "warning") == 1
        assert seen[("spotq_audit_at_risk", ())] == 1 and seen[("spotq_audit_spot_nodes", ())] == 1
        assert seen[("spotq_audit_runs_total", (("result", "ok"),))] >= 1
        # the test's queue has no EventBridge rule at all: the stack check says so
        assert finding_count(text, "stack-rule-missing", "high") == 1

        local_cluster.client.patch(f"{apps}/lonely", {"spec": {"replicas": 2}})
        local_cluster.client.create(
            f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
            pdb_manifest("lonely", {"app": "lonely"}, max_unavailable=1),
        )
        text = wait_until(
            "the fixed workload's findings back to 0",
            lambda: scraped_when(("single-replica", "high", 0), ("no-pdb", "warning", 0)),
            timeout=60,
        )
        assert finding_count(text, "stack-rule-missing", "high") == 1
    assert node.node_name not in text  # bounded labels: no node, pod or workload names
