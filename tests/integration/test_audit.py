"""`spotq audit` against a real API server: Spot nodes in several pools and zones, workloads built to trip every
check, one healthy workload that trips none, spotq's IMDS DaemonSet missing one node and a queue consumer that
never gets ready. The verdict is read from the command's JSON and its exit status, as a CI job would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from testenv import LocalCluster, MotoServer
from testenv.workloads import deployment_manifest, pdb_manifest
from tests.deploy.support import create_stack
from tests.unit.test_cli import Cli

from .helpers import wait_until

pytestmark = pytest.mark.integration
JSON = dict[str, Any]

RUN = "audit.spotq.test/run"  # every node of this test: the audit's SPOTQ_KUBE__NODE_SELECTOR
IMDS = "audit.spotq.test/imds"  # nodes spotq's (test) IMDS DaemonSet runs on
HEALTHY = "audit.spotq.test/healthy"
NODEGROUP = "eks.amazonaws.com/nodegroup"
ZONE = "topology.kubernetes.io/zone"
CHART_LABELS = {"app.kubernetes.io/name": "spotq", "app.kubernetes.io/instance": "spotq",
                "app.kubernetes.io/part-of": "spotq"}  # fmt: skip


@pytest.fixture
def spotq(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


@pytest.fixture
def healthy_namespace(local_cluster: LocalCluster, namespace: str) -> Iterator[str]:
    name = local_cluster.create_namespace(f"{namespace[:50]}-ok")
    try:
        yield name
    finally:
        local_cluster.delete_namespace(name)


def spread(manifest: JSON, selector: Mapping[str, str]) -> JSON:
    """On nodes matching `selector`, at most one of its pods per node."""
    spec = manifest["spec"]["template"]["spec"]
    spec["nodeSelector"] = dict(selector)
    app = manifest["spec"]["selector"]["matchLabels"]
    spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": app}, "topologyKey": "kubernetes.io/hostname"}]}}  # fmt: skip
    return manifest


def deployment(name: str, replicas: int, selector: Mapping[str, str], **kwargs: Any) -> JSON:
    return spread(deployment_manifest(name, replicas, **kwargs), selector)


def as_kind(manifest: JSON, kind: str) -> JSON:
    """A Deployment manifest as a StatefulSet or ReplicaSet of the same pods."""
    changed = {**manifest, "kind": kind, "spec": dict(manifest["spec"])}
    if kind == "StatefulSet":
        changed["spec"]["serviceName"] = manifest["metadata"]["name"]
    return changed


class Objects:
    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.client, self.namespace = cluster.client, namespace

    def apps(self, manifest: JSON) -> None:
        plural = {"Deployment": "deployments", "StatefulSet": "statefulsets", "ReplicaSet": "replicasets",
                  "DaemonSet": "daemonsets"}[manifest["kind"]]  # fmt: skip
        self.client.create(f"/apis/apps/v1/namespaces/{self.namespace}/{plural}", manifest)

    def pdb(self, name: str, app: str, **limits: int | str) -> None:
        body = pdb_manifest(name, {"app": app}, **limits)
        self.client.create(f"/apis/policy/v1/namespaces/{self.namespace}/poddisruptionbudgets", body)

    def pod(self, manifest: JSON) -> None:
        self.client.create(f"/api/v1/namespaces/{self.namespace}/pods", manifest)

    def running(self, count: int) -> bool:
        pods = self.client.list_items(f"/api/v1/namespaces/{self.namespace}/pods")
        ready = [p for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                         for c in (p.get("status") or {}).get("conditions") or [])]  # fmt: skip
        return len(ready) >= count

    def budgets_observed(self) -> bool:
        pdbs = self.client.list_items(f"/apis/policy/v1/namespaces/{self.namespace}/poddisruptionbudgets")
        return all((p.get("status") or {}).get("observedGeneration", 0) >= p["metadata"].get("generation", 1)
                   and "disruptionsAllowed" in (p.get("status") or {}) for p in pdbs)  # fmt: skip


def spot_node(
    cluster: LocalCluster, run: str, pool: str, zone: str, *, imds: bool = True, extra: Mapping[str, str] | None = None
) -> str:
    labels = {RUN: run, NODEGROUP: pool, ZONE: zone, **({IMDS: "yes"} if imds else {}), **(extra or {})}
    (node,) = cluster.create_spot_nodes(1, zones=(zone,), labels=labels)
    return node.node_name


def imds_daemonset() -> JSON:
    labels = {**CHART_LABELS, "app.kubernetes.io/component": "imds-monitor"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "spotq", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {IMDS: "yes"},
                    "containers": [{"name": "spotq", "image": "registry.invalid/spotq:1", "args": ["imds"]}],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],  # a DaemonSet's pods stay: no finding
                },
            },
        },
    }


def queue_consumer() -> JSON:
    """spotq's queue-mode Deployment as the chart labels it, on no node at all: never ready."""
    manifest = deployment_manifest("spotq-consumer", 1, node_selector={"audit.spotq.test/nowhere": "yes"})
    labels = {**CHART_LABELS, "app.kubernetes.io/component": "queue-consumer"}
    manifest["metadata"]["labels"] = labels
    return manifest


def findings(result_out: str) -> list[JSON]:
    document = json.loads(result_out)
    assert set(document) == {"at_risk", "spot_nodes", "findings"}
    for finding in document["findings"]:
        assert set(finding) == {"check", "severity", "kind", "namespace", "name", "detail"}
    found: list[JSON] = document["findings"]
    return found


def test_audit_trips_every_check_and_passes_the_healthy_workload(
    local_cluster: LocalCluster, namespace: str, healthy_namespace: str, spotq: Cli
) -> None:
    run = uuid.uuid4().hex[:8]
    pool_a = [spot_node(local_cluster, run, "pool-a", zone) for zone in ("us-east-1a", "us-east-1b")]
    spot_node(local_cluster, run, "pool-b", "us-east-1c")
    spot_node(local_cluster, run, "pool-c", "us-east-1c")
    for pool, zone in (("pool-h1", "us-east-1a"), ("pool-h2", "us-east-1b")):
        spot_node(local_cluster, run, pool, zone, extra={HEALTHY: "yes"})
    unwatched = spot_node(local_cluster, run, "pool-n", "us-east-1a", imds=False)
    on_healthy_nodes = {RUN: run, HEALTHY: "yes"}

    ns = Objects(local_cluster, namespace)
    ns.apps(imds_daemonset())
    ns.apps(queue_consumer())
    ns.apps(deployment("single", 1, {RUN: run, NODEGROUP: "pool-b"}))
    ns.pdb("single", "single", max_unavailable=1)
    lone = as_kind(deployment("lone", 1, {RUN: run, NODEGROUP: "pool-c"}), "ReplicaSet")
    ns.apps(lone)
    ns.pdb("lone", "lone", max_unavailable=1)
    ns.apps(deployment("one-pool", 2, {RUN: run, NODEGROUP: "pool-a"}))  # two zones, one pool
    ns.pdb("one-pool", "one-pool", max_unavailable=1)
    ns.apps(deployment("one-zone", 2, {RUN: run, ZONE: "us-east-1c"}))  # two pools, one zone
    ns.pdb("one-zone", "one-zone", max_unavailable=1)
    ns.apps(deployment("no-pdb", 2, on_healthy_nodes))
    ns.apps(deployment("min-all", 2, on_healthy_nodes))
    ns.pdb("min-all", "min-all", min_available=2)
    ns.apps(as_kind(deployment("db", 2, on_healthy_nodes), "StatefulSet"))
    ns.pdb("db", "db", max_unavailable=0)
    ns.apps(deployment("overlap", 2, on_healthy_nodes))
    ns.pdb("overlap-a", "overlap", max_unavailable=1)
    ns.pdb("overlap-b", "overlap", max_unavailable=1)
    ns.apps(deployment("slow", 2, on_healthy_nodes, termination_grace_period_seconds=100))  # > 120 - 30
    ns.pdb("slow", "slow", max_unavailable=1)
    scratch = deployment("scratch", 2, on_healthy_nodes)
    scratch["spec"]["template"]["spec"]["volumes"] = [
        {"name": "cache", "emptyDir": {}}, {"name": "logs", "hostPath": {"path": "/var/log/scratch"}}]  # fmt: skip
    ns.apps(scratch)
    ns.pdb("scratch", "scratch", max_unavailable=1)
    ns.pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug"},
            "spec": {"nodeSelector": on_healthy_nodes, "containers": [{"name": "sh", "image": "registry.invalid/sh"}]}})  # fmt: skip

    ok = Objects(local_cluster, healthy_namespace)
    ok.apps(deployment("healthy", 2, on_healthy_nodes, termination_grace_period_seconds=60))
    ok.pdb("healthy", "healthy", max_unavailable=1)

    # 6 IMDS pods, 1 + 1 + 2 + 2 + 2 * 6 workload pods and the bare pod; the consumer never runs.
    wait_until("every pod but the consumer's ready", lambda: ns.running(6 + 6 + 12 + 1) and ok.running(2), timeout=120)
    wait_until("the PDBs observed", lambda: ns.budgets_observed() and ok.budgets_observed(), timeout=60)

    settings = {"SPOTQ_KUBE__KUBECONFIG": str(local_cluster.kubeconfig_path), "SPOTQ_KUBE__NODE_SELECTOR": f"{RUN}={run}",
                "SPOTQ_DRAIN__SAFETY_MARGIN_SECONDS": "30", "SPOTQ_QUEUE__URL": "http://127.0.0.1:9/000000000000/q"}  # fmt: skip
    result = spotq("audit", "-o", "json", "-n", namespace, "-n", healthy_namespace, "--no-stack", **settings)
    assert result.code == 1, result.err
    document = json.loads(result.out)
    assert document["at_risk"] is True and document["spot_nodes"] == 7
    found = findings(result.out)
    ours = {
        (f["check"], f["kind"], f["namespace"], f["name"])
        for f in found
        if f["namespace"] in (namespace, healthy_namespace) or f["kind"] == "Node"
    }
    assert ours == {
        ("single-replica", "Deployment", namespace, "single"),
        ("single-replica", "ReplicaSet", namespace, "lone"),
        ("spot-single-pool", "Deployment", namespace, "one-pool"),
        ("spot-single-zone", "Deployment", namespace, "one-zone"),
        ("no-pdb", "Deployment", namespace, "no-pdb"),
        ("pdb-blocks-eviction", "Deployment", namespace, "min-all"),
        ("pdb-blocks-eviction", "StatefulSet", namespace, "db"),
        ("pdb-overlap", "Deployment", namespace, "overlap"),
        ("grace-too-long", "Deployment", namespace, "slow"),
        ("local-storage", "Deployment", namespace, "scratch"),
        ("bare-pod", "Pod", namespace, "debug"),
        ("imds-pod-missing", "Node", "", unwatched),
        ("queue-consumer-down", "Deployment", namespace, "spotq-consumer"),
    }
    by_name = {(f["check"], f["name"]): f for f in found}
    assert "pool pool-a" in by_name[("spot-single-pool", "one-pool")]["detail"]
    assert "minAvailable 2 with 2 replicas" in by_name[("pdb-blocks-eviction", "min-all")]["detail"]
    assert "maxUnavailable 0" in by_name[("pdb-blocks-eviction", "db")]["detail"]
    assert "100 > the 90 s" in by_name[("grace-too-long", "slow")]["detail"]
    assert "emptyDir cache, hostPath logs" in by_name[("local-storage", "scratch")]["detail"]
    assert set(pool_a) == {
        p["spec"]["nodeName"] for p in local_cluster.list_pods(namespace, label_selector="app=one-pool")
    }
    assert not [f for f in found if f["namespace"] == healthy_namespace]

    # The healthy namespace on the nodes its pods use, every one watched by the IMDS DaemonSet: nothing at risk.
    healthy_only = {**settings, "SPOTQ_KUBE__NODE_SELECTOR": f"{RUN}={run},{HEALTHY}=yes", "SPOTQ_QUEUE__URL": ""}
    clean = spotq("audit", "-n", healthy_namespace, **healthy_only)
    assert clean.code == 0, clean.out + clean.err
    assert clean.out.strip() == "Nothing at risk on 2 Spot nodes."
    table = spotq("audit", "-n", namespace, "--no-stack", **settings)
    assert table.code == 1 and table.out.splitlines()[0].split() == ["SEVERITY", "CHECK", "NAMESPACE", "NAME", "DETAIL"]
    assert table.out.strip().splitlines()[-1].startswith(f"{len(found)} findings (")


AUDIT_RULES = [  # what the chart's ClusterRole grants that the audit reads, and the apps lists it needs beside
    {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets", "replicasets", "daemonsets"],
        "verbs": ["list"],
    },
]


@pytest.fixture
def auditor(local_cluster: LocalCluster, namespace: str) -> Iterator[tuple[str, list[JSON]]]:
    """A ServiceAccount bound to a ClusterRole whose rules the test sets (name, the role's rules to edit)."""
    name = f"spotq-audit-{uuid.uuid4().hex[:6]}"
    local_cluster.create_service_account(namespace, name)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    local_cluster.client.create(f"{rbac}/clusterroles", {"metadata": {"name": name}, "rules": []})
    local_cluster.client.create(f"{rbac}/clusterrolebindings", {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})  # fmt: skip
    try:
        yield name, []
    finally:
        local_cluster.client.delete(f"{rbac}/clusterrolebindings/{name}")
        local_cluster.client.delete(f"{rbac}/clusterroles/{name}")


def test_audit_needs_list_and_nothing_else(
    local_cluster: LocalCluster, namespace: str, spotq: Cli, auditor: tuple[str, list[JSON]]
) -> None:
    name, _ = auditor
    run = uuid.uuid4().hex[:8]
    spot_node(local_cluster, run, "pool-a", "us-east-1a")
    ns = Objects(local_cluster, namespace)
    ns.apps(imds_daemonset())  # spotq in IMDS mode, on the one Spot node: nothing at risk
    wait_until("the IMDS pod ready", lambda: ns.running(1), timeout=60)
    kubeconfig = local_cluster.token_kubeconfig(namespace, name)
    settings = {"SPOTQ_KUBE__KUBECONFIG": str(kubeconfig), "SPOTQ_KUBE__NODE_SELECTOR": f"{RUN}={run}"}
    role = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"

    local_cluster.client.patch(role, {"rules": AUDIT_RULES[:2]})  # the chart's reads, no apps lists
    refused = spotq("audit", "-o", "json", **settings)
    assert refused.code == 2 and refused.out == ""
    assert (
        refused.err.startswith("spotq: cannot list ")
        and ".apps: 403 Forbidden (the audit needs list on " in refused.err
    )

    local_cluster.client.patch(role, {"rules": AUDIT_RULES})
    allowed = wait_until(
        "the role's new rules in force",
        lambda: (r := spotq("audit", "-o", "json", **settings)).code != 2 and r,
        timeout=30,
    )
    document = json.loads(allowed.out)
    assert document == {"at_risk": False, "spot_nodes": 1, "findings": []} and allowed.code == 0


@pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning")
def test_audit_reads_the_stack_the_template_deploys_and_names_each_way_an_event_would_not_arrive(
    local_cluster: LocalCluster, moto: MotoServer, spotq: Cli
) -> None:
    """infra/cloudformation/spotq.yaml deployed into moto, read over the wire: with the template's queue policy
    nothing is missing; a disabled rule, a deleted one and a policy that names too few rules are each reported."""
    queue_url = create_stack(moto)["QueueURL"]
    sqs, events = moto.client("sqs"), moto.client("events")
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    names = events.list_rule_names_by_target(TargetArn=queue_arn)["RuleNames"]
    arns = {name: events.describe_rule(Name=name)["Arn"] for name in names}
    spot_rule = next(n for n in names if "SpotInterruption" in n)

    def allow(rule_arns: list[str]) -> None:  # the template's QueuePolicy (moto's CloudFormation lacks the type)
        statement = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
                     "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}}}  # fmt: skip
        policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": policy})

    settings = {"SPOTQ_KUBE__KUBECONFIG": str(local_cluster.kubeconfig_path), "SPOTQ_QUEUE__URL": queue_url,
                "SPOTQ_KUBE__NODE_SELECTOR": f"{RUN}=no-node-{uuid.uuid4().hex[:6]}",
                "SPOTQ_AWS__ENDPOINT_URL": moto.endpoint_url, **moto.env()}  # fmt: skip

    def stack_findings(*args: str) -> set[tuple[str, str, str]]:
        result = spotq("audit", "-o", "json", *args, **settings)
        assert result.code in (0, 1), result.err
        return {(f["check"], f["severity"], f["name"]) for f in findings(result.out) if f["check"].startswith("stack-")}

    # moto's stack has no queue policy: EventBridge could send nothing
    refused = stack_findings()
    assert {check for check, _, _ in refused} == {"stack-rule-refused"} and len(refused) == 10  # every route

    allow(list(arns.values()))
    assert stack_findings() == set()

    events.disable_rule(Name=spot_rule)
    assert stack_findings() == {("stack-rule-missing", "high", "Spot interruption warning")}
    events.enable_rule(Name=spot_rule)

    allow([arn for name, arn in arns.items() if name != spot_rule])
    assert stack_findings() == {("stack-rule-refused", "high", "Spot interruption warning")}

    rebalance_rule = next(n for n in names if "Rebalance" in n)
    events.remove_targets(Rule=rebalance_rule, Ids=["spotq-queue"])
    assert ("stack-rule-missing", "warning", "rebalance recommendation") in stack_findings()
    assert stack_findings("--no-stack") == set()


def test_audit_says_when_it_could_not_read_the_stack(local_cluster: LocalCluster, moto: MotoServer, spotq: Cli) -> None:
    settings = {"SPOTQ_KUBE__KUBECONFIG": str(local_cluster.kubeconfig_path),
                "SPOTQ_QUEUE__URL": f"{moto.endpoint_url}/123456789012/no-such-queue",
                "SPOTQ_KUBE__NODE_SELECTOR": f"{RUN}=no-node-{uuid.uuid4().hex[:6]}",
                "SPOTQ_AWS__ENDPOINT_URL": moto.endpoint_url, **moto.env()}  # fmt: skip
    result = spotq("audit", "-o", "json", **settings)
    assert result.code == 1, result.err
    (unread,) = [f for f in findings(result.out) if f["check"].startswith("stack-")]
    assert unread["check"] == "stack-not-checked" and unread["severity"] == "warning"
    assert "NonExistentQueue" in unread["detail"] or "does not exist" in unread["detail"], unread["detail"]
