"""The chart in queue mode, installed into the real local control plane with the README's commands.

The queue comes from the CloudFormation stack deployed into moto, so the path is the user's: stack outputs →
`helm install` → spotq running as the chart's ServiceAccount (a token minted for it, exactly its RBAC) → an
interruption put on the EventBridge bus drains the node.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from testenv import KubeApiError, LocalCluster, MotoServer, tools
from testenv.kube import JSON
from testenv.procs import ManagedProcess, wait_until
from tests.unit.test_cli import Cli, Exit

from .support import (
    CFN_TEMPLATE,
    REPO,
    Helm,
    ready,
    refusals,
    sample_event,
    tainted_cordoned_and_empty,
    web_pods_on_one_node,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning"),
]

NAMESPACE = "kube-system"
RELEASE = "spotq"
OIDC_PROVIDER = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71"
TAINT = "spotq.io/spot-interruption"


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer) -> dict[str, str]:
    """The CloudFormation stack with an IRSA role for kube-system/spotq; its outputs."""
    cfn = moto_server.client("cloudformation")
    name = f"spotq-{uuid.uuid4().hex[:8]}"
    cfn.create_stack(
        StackName=name,
        TemplateBody=CFN_TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": "OidcProvider", "ParameterValue": OIDC_PROVIDER}],
        Capabilities=["CAPABILITY_IAM"],
    )
    outputs = cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


@pytest.fixture(scope="module")
def release(cluster_helm: Helm, stack: dict[str, str]) -> Iterator[subprocess.CompletedProcess[str]]:
    """`helm install` as the README says it, with the stack's outputs; uninstalled after the module."""
    installed = cluster_helm.run(
        "install", RELEASE, "helm/spotq", "--namespace", NAMESPACE,
        "--set", f"queue.url={stack['QueueURL']}",
        "--set", f"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={stack['RoleARN']}",
    )  # fmt: skip
    try:
        yield installed
    finally:
        cluster_helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)


def _manifest_objects(helm: Helm, release: str, namespace: str) -> list[JSON]:
    manifest = helm.run("get", "manifest", release, "--namespace", namespace).stdout
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def _api_path(obj: JSON, namespace: str) -> str:
    group_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
    prefix = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    plural = {"PodDisruptionBudget": "poddisruptionbudgets"}.get(kind, kind.lower() + "s")
    if kind in ("ClusterRole", "ClusterRoleBinding", "FlowSchema"):
        return f"{prefix}/{plural}/{name}"
    return f"{prefix}/namespaces/{obj['metadata'].get('namespace', namespace)}/{plural}/{name}"


def test_helm_install_creates_every_object_and_the_api_server_accepts_them(
    local_cluster: LocalCluster, cluster_helm: Helm, release: subprocess.CompletedProcess[str], stack: dict[str, str]
) -> None:
    assert "STATUS: deployed" in release.stdout
    assert f"rollout status deployment/{RELEASE}" in release.stdout  # NOTES.txt
    assert stack["QueueURL"] in release.stdout
    objects = _manifest_objects(cluster_helm, RELEASE, NAMESPACE)
    assert {o["kind"] for o in objects} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "FlowSchema",
    }
    for obj in objects:
        stored = local_cluster.client.get(_api_path(obj, NAMESPACE))
        assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    account = local_cluster.client.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{RELEASE}")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == stack["RoleARN"]


def _served_by(local_cluster: LocalCluster, namespace: str, account: str) -> tuple[str | None, str | None]:
    """The UIDs of the FlowSchema that matched a request made as the ServiceAccount and of the API Priority and
    Fairness level that served it (the API server says both in response headers)."""
    client = local_cluster.token_client(namespace, account)
    try:
        _, _, headers = client.exchange("GET", "/api/v1/nodes", params={"limit": 1})
    finally:
        client.close()
    return headers.get("x-kubernetes-pf-flowschema-uid"), headers.get("x-kubernetes-pf-prioritylevel-uid")


@contextlib.contextmanager
def installed(cluster_helm: Helm, name: str, namespace: str, *sets: str) -> Iterator[None]:
    """A release of its own (`--set` pairs in `sets`) for the length of the block."""
    cluster_helm.run(
        "install", name, "helm/spotq", "--namespace", namespace,
        "--set", f"queue.url=https://sqs.us-east-1.amazonaws.com/123456789012/{name}", *sets,
    )  # fmt: skip
    try:
        yield
    finally:
        cluster_helm.run("uninstall", name, "--namespace", namespace, "--wait", check=False)


def test_spotq_requests_are_served_in_the_priority_level_its_flow_schema_names(
    local_cluster: LocalCluster, cluster_helm: Helm, namespace: str
) -> None:
    # Outside kube-system (whose accounts the API server already serves in workload-high) a ServiceAccount's
    # requests land in workload-low, shared by every ServiceAccount: other clients' 429 storms would turn spotq's
    # Lease renewals, taints and evictions away too (see the fault report's apiserver-throttled scenario).
    name = "spotq-apf"
    with installed(cluster_helm, name, namespace):
        flowcontrol = "/apis/flowcontrol.apiserver.k8s.io/v1"
        ours = local_cluster.client.get(f"{flowcontrol}/flowschemas/{name}")["metadata"]["uid"]
        high = local_cluster.client.get(f"{flowcontrol}/prioritylevelconfigurations/workload-high")["metadata"]["uid"]
        low = local_cluster.client.get(f"{flowcontrol}/prioritylevelconfigurations/workload-low")["metadata"]["uid"]
        assert _served_by(local_cluster, namespace, name) == (ours, high)
        local_cluster.create_service_account(namespace, "another-client")
        schema, level = _served_by(local_cluster, namespace, "another-client")
        assert schema != ours and level == low  # the rest stay where they were


def test_helm_install_dry_run_on_the_server_accepts_the_imds_mode_objects(cluster_helm: Helm) -> None:
    result = cluster_helm.run(
        "install", "spotq-imds-check", "helm/spotq", "--namespace", NAMESPACE, "--dry-run=server",
        "--set", "mode=imds", "--set", "nodeSelector.lifecycle=Ec2Spot",
    )  # fmt: skip
    assert "kind: DaemonSet" in result.stdout
    assert "kubectl get daemonsets --all-namespaces" in result.stdout  # NOTES.txt


# -- RBAC, proven with a token minted for the chart's ServiceAccount --------------------------------------------

ALLOWED = [
    ("get", "nodes", None),
    ("list", "nodes", None),
    ("watch", "nodes", None),
    ("patch", "nodes", None),
    ("list", "pods", "--all-namespaces"),
    ("watch", "pods", "--all-namespaces"),
    ("create", "pods", "--subresource=eviction --all-namespaces"),
    ("delete", "pods", "--all-namespaces"),  # drain.completeAdmittedEvictions, on by default
    ("create", "events", "-n=default"),
    ("list", "poddisruptionbudgets.policy", "--all-namespaces"),
    ("watch", "poddisruptionbudgets.policy", "--all-namespaces"),
]
REFUSED = [
    ("get", "pods", "--all-namespaces"),
    ("patch", "events", "-n=default"),
    ("delete", "nodes", None),
    ("update", "nodes", None),
    ("create", "nodes", None),
    ("get", "secrets", "--all-namespaces"),
    ("list", "secrets", "-n=kube-system"),
    ("create", "pods", "-n=default"),
    ("get", "configmaps", "-n=kube-system"),
    ("create", "serviceaccounts", "--subresource=token -n=kube-system"),
    ("patch", "deployments.apps", "-n=kube-system"),
    ("delete", "poddisruptionbudgets.policy", "--all-namespaces"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
]


def _can_i(kubeconfig: Path, verb: str, resource: str, scope: str | None) -> bool:
    argv = [str(tools.tool("kubectl")), f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource]
    if scope:
        argv += scope.split()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.stdout.strip() == "yes"


@pytest.fixture(scope="module")
def token_kubeconfig(local_cluster: LocalCluster, release: subprocess.CompletedProcess[str]) -> Path:
    return local_cluster.token_kubeconfig(NAMESPACE, RELEASE)


def test_service_account_token_may_do_what_spotq_needs(token_kubeconfig: Path) -> None:
    refused = [check for check in ALLOWED if not _can_i(token_kubeconfig, *check)]
    assert refused == []


def test_service_account_token_is_refused_everything_else(local_cluster: LocalCluster, token_kubeconfig: Path) -> None:
    allowed = [check for check in REFUSED if _can_i(token_kubeconfig, *check)]
    assert allowed == []
    # And for real, not only by review: reading secrets and deleting a node are forbidden.
    client = local_cluster.token_client(NAMESPACE, RELEASE)
    (node, _), *_ = local_cluster.create_on_demand_nodes(1)
    for method, path in (("GET", "/api/v1/secrets"), ("DELETE", f"/api/v1/nodes/{node}")):
        with pytest.raises(KubeApiError) as refused:
            client.request(method, path)
        assert refused.value.status == 403
    assert local_cluster.get_node(node) is not None


def test_pod_delete_is_granted_only_while_an_option_deletes_pods(
    local_cluster: LocalCluster, cluster_helm: Helm, namespace: str
) -> None:
    name = "spotq-force"
    only_force = (
        "--set",
        "drain.forceDeleteBeforeDeadlineSeconds=30",
        "--set",
        "drain.completeAdmittedEvictions=false",
    )
    with installed(cluster_helm, name, namespace, *only_force):
        kubeconfig = local_cluster.token_kubeconfig(namespace, name)
        assert _can_i(kubeconfig, "delete", "pods", "--all-namespaces")
        cluster_helm.run(
            "upgrade", name, "helm/spotq", "--namespace", namespace, "--reuse-values",
            "--set", "drain.forceDeleteBeforeDeadlineSeconds=0",
        )  # fmt: skip
        wait_until(
            "pods delete revoked",
            lambda: not _can_i(kubeconfig, "delete", "pods", "--all-namespaces"),
            timeout=30,
            interval=0.5,
        )


def test_the_service_account_can_run_the_audit_while_the_periodic_audit_is_on(
    local_cluster: LocalCluster, cluster_helm: Helm, namespace: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    name = "spotq-audit"
    spotq = Cli(monkeypatch, capsys)
    with installed(cluster_helm, name, namespace, "--set", "audit.intervalSeconds=600"):
        settings = {"SPOTQ_KUBE__KUBECONFIG": str(local_cluster.token_kubeconfig(namespace, name)),
                    "SPOTQ_KUBE__NODE_SELECTOR": "audit.spotq.test/none=1"}  # fmt: skip
        results: list[Exit] = []

        def audit() -> Exit:
            results.append(spotq("audit", "-o", "json", "--no-stack", **settings))
            return results[-1]

        wait_until("the audit's reads allowed", lambda: audit().code != 2, timeout=30, interval=0.5)
        assert json.loads(results[-1].out)["spot_nodes"] == 0, results[-1].err
        cluster_helm.run(
            "upgrade", name, "helm/spotq", "--namespace", namespace, "--reuse-values", "--set", "audit.intervalSeconds=0"
        )  # fmt: skip
        wait_until("the apps lists revoked", lambda: audit().code == 2, timeout=30, interval=0.5)
        assert ".apps: 403 Forbidden (the audit needs list on " in results[-1].err


# -- a full interruption, run with the chart's environment and ServiceAccount -------------------------------------


def _spotq_env(local_cluster: LocalCluster, moto: MotoServer, kubeconfig: Path, pod: JSON) -> dict[str, str]:
    """The installed Deployment's literal SPOTQ_* settings, plus what differs outside the cluster.

    spotq runs here as a process standing in for the Deployment's (kwok-simulated) `pod`: it takes that pod's name as
    the downward API would give it, so its drains must never evict that pod; once that pod's node is drained, it
    evicts it itself (SPOTQ_DRAIN__EVICT_OWN_POD) so that the replacement starts elsewhere.
    """
    deployment = local_cluster.client.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}")
    (spotq,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in spotq["env"] if "value" in e}
    env |= {
        "PATH": "/usr/bin:/bin",
        "SPOTQ_KUBE__KUBECONFIG": str(kubeconfig),  # in the pod: the in-cluster token of the same ServiceAccount
        "SPOTQ_KUBE__POD_NAME": pod["metadata"]["name"],
        "SPOTQ_KUBE__POD_NAMESPACE": pod["metadata"]["namespace"],
        "SPOTQ_AWS__ENDPOINT_URL": moto.endpoint_url,  # in the pod: the real AWS endpoints
        "SPOTQ_SERVER__ADDRESS": "127.0.0.1",
        "SPOTQ_SERVER__PORT": "0",  # a free port; the log says which
        "SPOTQ_QUEUE__WAIT_SECONDS": "1",
        "AWS_ACCESS_KEY_ID": "testing",  # in the pod: IRSA's web identity
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return env


def _release_pods(local_cluster: LocalCluster) -> list[JSON]:
    pods = local_cluster.list_pods(NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _place_own_pod(local_cluster: LocalCluster, node_name: str | None) -> JSON:
    """Pin the release's pod to a node (None: back to the scheduler's choice); returns the one running pod once the
    rollout is complete."""
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}"
    generation = local_cluster.client.patch(path, {"spec": {"template": {"spec": {"nodeName": node_name}}}})[
        "metadata"
    ]["generation"]

    found: list[JSON] = []

    def placed() -> bool:
        status = local_cluster.client.get(path).get("status", {})
        rolled = status.get("observedGeneration", 0) >= generation and status.get("updatedReplicas") == 1
        rolled = rolled and status.get("replicas") == 1 and status.get("availableReplicas") == 1
        pods = _release_pods(local_cluster)
        if rolled and len(pods) == 1 and (node_name is None or pods[0]["spec"].get("nodeName") == node_name):
            found[:] = pods
        return bool(found)

    wait_until("spotq's pod placed", placed, timeout=90, interval=0.5)
    return found[0]


def _own_pod_on(local_cluster: LocalCluster, node_name: str) -> JSON:
    return _place_own_pod(local_cluster, node_name)


def _own_pod_anywhere(local_cluster: LocalCluster) -> None:
    _place_own_pod(local_cluster, None)


def test_spot_interruption_on_the_bus_drains_the_node_as_the_chart_service_account(
    local_cluster: LocalCluster,
    moto_server: MotoServer,
    stack: dict[str, str],
    token_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    target, instance_id, spare = web_pods_on_one_node(local_cluster, namespace)
    # spotq's own pod on the very node it will drain: the drain leaves it alone (and not only by luck of placement),
    # then spotq evicts it last, as the chart's ServiceAccount, to be rescheduled before the node goes.
    own = _own_pod_on(local_cluster, target)
    env = _spotq_env(local_cluster, moto_server, token_kubeconfig, own)
    assert env["SPOTQ_QUEUE__URL"] == stack["QueueURL"]
    argv = [sys.executable, "-m", "spotq", "run"]
    spotq = ManagedProcess("spotq", argv, tmp_path / "spotq.log", env=env, cwd=REPO)
    try:
        wait_until("spotq /readyz", lambda: ready(spotq.log_path), timeout=60, processes=[spotq])

        event = sample_event("spot-interruption-warning.json")
        event["detail"]["instance-id"] = instance_id
        reply = moto_server.client("events").put_events(
            Entries=[
                {
                    "Source": event["source"],
                    "DetailType": event["detail-type"],
                    "Detail": json.dumps(event["detail"]),
                    "Resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"],
                }
            ]
        )
        assert reply["FailedEntryCount"] == 0

        def drained() -> bool:
            return tainted_cordoned_and_empty(local_cluster, namespace, target, TAINT)

        wait_until("the target node tainted, cordoned and empty", drained, timeout=90, interval=0.5, processes=[spotq])

        # The evicted pods came back on the spare node; the spare was not touched.
        local_cluster.wait_deployments_ready(namespace, ["web"], timeout=60)
        assert {p["spec"]["nodeName"] for p in local_cluster.list_pods(namespace)} == {spare}
        spare_node = local_cluster.get_node(spare)
        assert spare_node is not None and not spare_node["spec"].get("unschedulable")

        # The message is deleted once handled, and spotq told the operator on the node (events create).
        sqs = moto_server.client("sqs")

        def queue_empty() -> bool:
            attributes = sqs.get_queue_attributes(QueueUrl=stack["QueueURL"], AttributeNames=["All"])["Attributes"]
            counts = (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"])
            return counts == ("0", "0")

        wait_until("the message deleted", queue_empty, timeout=60, interval=0.5, processes=[spotq])
        events = local_cluster.client.list_items(
            "/api/v1/namespaces/default/events", fieldSelector=f"involvedObject.name={target}"
        )
        assert any(e.get("source", {}).get("component") == "spotq" for e in events)

        # Its own pod, on the drained node, was evicted after the rest (the node said so), by spotq itself.
        def own_evicted() -> bool:
            return own["metadata"]["uid"] not in {p["metadata"]["uid"] for p in _release_pods(local_cluster)}

        wait_until("spotq's own pod evicted", own_evicted, timeout=60, interval=0.5, processes=[spotq])
        events = local_cluster.client.list_items(
            "/api/v1/namespaces/default/events", fieldSelector=f"involvedObject.name={target}"
        )
        reasons = [e["reason"] for e in events if e.get("source", {}).get("component") == "spotq"]
        assert "DrainFinished" in reasons and "SpotqRescheduled" in reasons
    finally:
        code = spotq.stop(timeout=30)
        _own_pod_anywhere(local_cluster)
    log = spotq.log_path.read_text()
    assert refusals(log) == [], log[-4000:]
    assert code == 0, log[-4000:]
