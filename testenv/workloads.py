"""Objects that make the fake cluster look like EKS: Spot / on-demand Nodes, Deployments with PDBs.

Every function takes a :class:`~testenv.kube.KubeClient` (admin); :class:`~testenv.cluster.LocalCluster` has
methods of the same names that pass its own client.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .kube import JSON, KubeApiError, KubeClient

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
DEFAULT_IMAGE = "registry.invalid/app:1"

# instance type -> (vCPU, memory in MiB); allocatable is derived the way EKS AMIs reserve resources, roughly.
INSTANCE_TYPES: dict[str, tuple[int, int]] = {
    "m5.large": (2, 8192),
    "m5.xlarge": (4, 16384),
    "m5.2xlarge": (8, 32768),
    "c5.xlarge": (4, 8192),
    "c5.2xlarge": (8, 16384),
    "r5.large": (2, 16384),
    "r5.xlarge": (4, 32768),
    "t3.large": (2, 8192),
}

DEFAULT_ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")


class NodeInfo(NamedTuple):
    """A created Node: unpacks as ``(node_name, instance_id)``."""

    node_name: str
    instance_id: str


class _PlannedNode(NamedTuple):
    node_name: str
    instance_id: str
    zone: str
    capacity_type: str  # "SPOT" or "ON_DEMAND"
    instance_type: str


class _Addresses:
    """Hands out unique ``ip-10-0-X-Y.ec2.internal`` names (X per zone block, never reused in a process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(0)

    def next(self) -> str:
        with self._lock:
            n = next(self._counter)
        third, fourth = divmod(n, 250)
        if third > 255:
            raise RuntimeError("ran out of fake node addresses (64000 per process)")
        return f"ip-10-0-{third}-{fourth + 4}.ec2.internal"


_ADDRESSES = _Addresses()


def new_instance_id() -> str:
    """A fresh EC2-style instance ID: ``i-`` and 17 hex digits."""
    return "i-" + secrets.token_hex(9)[:17]


def node_manifest(
    name: str,
    instance_id: str,
    *,
    zone: str = "us-east-1a",
    instance_type: str = "m5.xlarge",
    capacity_type: str = "SPOT",
    nodegroup: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    taints: Sequence[JSON] = (),
    pods: int = 110,
) -> JSON:
    """A Node that looks like an EKS worker; kwok manages it (annotation ``kwok.x-k8s.io/node: fake``)."""
    cpu, mem_mib = INSTANCE_TYPES.get(instance_type, (4, 16384))
    region = zone[:-1]
    spot = capacity_type.upper() == "SPOT"
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": region,
        "eks.amazonaws.com/capacityType": "SPOT" if spot else "ON_DEMAND",
        "eks.amazonaws.com/nodegroup": nodegroup or ("spot-workers" if spot else "on-demand-workers"),
        "type": "kwok",
    }
    if spot:
        node_labels["lifecycle"] = "Ec2Spot"
    node_labels.update(labels or {})
    node_annotations = {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"}
    node_annotations.update(annotations or {})
    capacity = {"cpu": str(cpu), "memory": f"{mem_mib}Mi", "pods": str(pods), "ephemeral-storage": "20Gi"}
    allocatable = {
        "cpu": f"{cpu * 1000 - 80}m",
        "memory": f"{mem_mib - 600}Mi",
        "pods": str(pods),
        "ephemeral-storage": "18Gi",
    }
    spec: JSON = {"providerID": f"aws:///{zone}/{instance_id}"}
    if taints:
        spec["taints"] = list(taints)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels, "annotations": node_annotations},
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023",
                "kubeletVersion": "v1.36.3-eks",
                "containerRuntimeVersion": "containerd://1.7.27",
                "kernelVersion": "6.1.0-kwok",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def _node_ready(node: JSON) -> bool:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def create_nodes(
    client: KubeClient,
    n: int,
    *,
    capacity_type: str = "SPOT",
    zones: Sequence[str] = DEFAULT_ZONES,
    instance_types: Sequence[str] = ("m5.xlarge",),
    labels: Mapping[str, str] | None = None,
    taints: Sequence[JSON] = (),
    pods: int = 110,
    wait_ready: bool = True,
    timeout: float = 120.0,
    workers: int = 16,
) -> list[NodeInfo]:
    """Create ``n`` kwok-managed Nodes concurrently (round-robin over zones and instance types)."""
    planned = []
    for i in range(n):
        zone = zones[i % len(zones)]
        instance_type = instance_types[i % len(instance_types)]
        planned.append(_PlannedNode(_ADDRESSES.next(), new_instance_id(), zone, capacity_type.upper(), instance_type))

    def create(info: _PlannedNode) -> None:
        manifest = node_manifest(
            info.node_name,
            info.instance_id,
            zone=info.zone,
            instance_type=info.instance_type,
            capacity_type=info.capacity_type,
            labels=labels,
            taints=taints,
            pods=pods,
        )
        client.create("/api/v1/nodes", manifest)

    client.map_concurrently(create, planned, workers=workers)
    if wait_ready:
        wait_nodes_ready(client, [info.node_name for info in planned], timeout=timeout)
    return [NodeInfo(info.node_name, info.instance_id) for info in planned]


def create_spot_nodes(client: KubeClient, n: int, **kwargs: Any) -> list[NodeInfo]:
    """``n`` EKS-like Spot nodes (labels ``lifecycle=Ec2Spot``, ``eks.amazonaws.com/capacityType=SPOT``)."""
    return create_nodes(client, n, capacity_type="SPOT", **kwargs)


def create_on_demand_nodes(client: KubeClient, n: int, **kwargs: Any) -> list[NodeInfo]:
    """``n`` on-demand nodes (``eks.amazonaws.com/capacityType=ON_DEMAND``, no Spot labels)."""
    return create_nodes(client, n, capacity_type="ON_DEMAND", **kwargs)


def wait_nodes_ready(client: KubeClient, names: Iterable[str], *, timeout: float = 120.0) -> None:
    """Wait until every named Node has condition Ready=True (kwok's node-initialize stage)."""
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        if len(pending) <= 3:
            nodes = [n for n in (client.get_or_none(f"/api/v1/nodes/{name}") for name in pending) if n]
        else:
            nodes = client.list_items("/api/v1/nodes")
        pending -= {node["metadata"]["name"] for node in nodes if _node_ready(node)}
        if not pending:
            return
        if time.monotonic() > deadline:
            sample = ", ".join(sorted(pending)[:5])
            raise TimeoutError(f"{len(pending)} node(s) not Ready after {timeout:.0f}s (e.g. {sample})")
        time.sleep(0.2)


def delete_nodes(client: KubeClient, names: Iterable[str], *, workers: int = 16) -> None:
    client.map_concurrently(lambda name: client.delete(f"/api/v1/nodes/{name}"), list(names), workers=workers)


def cordon(client: KubeClient, node_name: str, *, unschedulable: bool = True) -> None:
    client.patch(f"/api/v1/nodes/{node_name}", {"spec": {"unschedulable": unschedulable or None}})


# -- namespaces -------------------------------------------------------------------------------------------------


def create_namespace(client: KubeClient, name: str, *, labels: Mapping[str, str] | None = None) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
    client.create("/api/v1/namespaces", body, exist_ok=True)


def delete_namespace(client: KubeClient, name: str, *, wait: bool = False, timeout: float = 60.0) -> None:
    """Delete a namespace; pods in it are removed at once (grace 0) so it does not linger."""
    for pod in client.list_items(f"/api/v1/namespaces/{name}/pods"):
        client.delete(f"/api/v1/namespaces/{name}/pods/{pod['metadata']['name']}", grace_period_seconds=0)
    client.delete(f"/api/v1/namespaces/{name}")
    if wait:
        client.wait_for(
            f"namespace {name} to be deleted",
            lambda: client.get_or_none(f"/api/v1/namespaces/{name}") is None,
            timeout=timeout,
        )


# -- deployments and PDBs ---------------------------------------------------------------------------------------


def bare_pod_manifest(name: str, node: str, *, finalizers: Sequence[str] = ()) -> JSON:
    """A pod bound straight to `node` (no scheduler, no controller) with no grace; `finalizers` keep it, terminating,
    after its deletion until they are taken off."""
    metadata: JSON = {"name": name}
    if finalizers:
        metadata["finalizers"] = list(finalizers)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            "tolerations": [{"key": KWOK_ANNOTATION, "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def deployment_manifest(
    name: str,
    replicas: int,
    *,
    labels: Mapping[str, str] | None = None,
    image: str = DEFAULT_IMAGE,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[JSON] = (),
    termination_grace_period_seconds: int = 30,
    cpu_request: str = "50m",
    memory_request: str = "64Mi",
    annotations: Mapping[str, str] | None = None,
) -> JSON:
    pod_labels = {"app": name, **(labels or {})}
    pod_spec: JSON = {
        "terminationGracePeriodSeconds": termination_grace_period_seconds,
        "containers": [
            {
                "name": "app",
                "image": image,
                "resources": {"requests": {"cpu": cpu_request, "memory": memory_request}},
            }
        ],
        # kwok does not taint its nodes by itself; tolerate the customary kwok taint in case a caller adds it.
        "tolerations": [
            {"key": KWOK_ANNOTATION, "operator": "Exists", "effect": "NoSchedule"},
            *tolerations,
        ],
    }
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": pod_labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(annotations or {})},
                "spec": pod_spec,
            },
        },
    }


def pdb_manifest(name: str, selector: Mapping[str, str], *, min_available: int | str | None = None,
                 max_unavailable: int | str | None = None) -> JSON:  # fmt: skip
    if (min_available is None) == (max_unavailable is None):
        raise ValueError("give exactly one of min_available or max_unavailable")
    spec: JSON = {"selector": {"matchLabels": dict(selector)}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    else:
        spec["maxUnavailable"] = max_unavailable
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name}, "spec": spec}


def create_deployment_with_pdb(
    client: KubeClient,
    namespace: str,
    name: str,
    replicas: int,
    *,
    min_available: int | str | None = None,
    max_unavailable: int | str | None = None,
    pdb: bool = True,
    wait_ready: bool = False,
    timeout: float = 120.0,
    **deployment_kwargs: Any,
) -> None:
    """A Deployment ``name`` (pods labelled ``app=<name>``) and a PDB ``name`` over the same pods.

    With neither ``min_available`` nor ``max_unavailable`` (or ``pdb=False``) no PDB is created.
    ``deployment_kwargs`` go to :func:`deployment_manifest` (node_selector, tolerations,
    termination_grace_period_seconds, cpu_request, image, labels, annotations).
    """
    manifest = deployment_manifest(name, replicas, **deployment_kwargs)
    client.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", manifest)
    if pdb and (min_available is not None or max_unavailable is not None):
        body = pdb_manifest(name, {"app": name}, min_available=min_available, max_unavailable=max_unavailable)
        client.create(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", body)
    if wait_ready:
        wait_deployments_ready(client, namespace, [name], timeout=timeout)


def _deployment_ready(dep: JSON) -> bool:
    spec = dep.get("spec", {})
    status = dep.get("status", {})
    want = spec.get("replicas", 1)
    return bool(
        status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 1)
        and status.get("readyReplicas", 0) == want
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
    )


def wait_deployments_ready(
    client: KubeClient, namespace: str, names: Iterable[str] | None = None, *, timeout: float = 120.0
) -> None:
    """Wait until the named Deployments (default: all in the namespace) have all replicas ready."""
    wanted = set(names) if names is not None else None
    deadline = time.monotonic() + timeout
    while True:
        deployments = client.list_items(f"/apis/apps/v1/namespaces/{namespace}/deployments")
        relevant = [d for d in deployments if wanted is None or d["metadata"]["name"] in wanted]
        missing = (wanted or set()) - {d["metadata"]["name"] for d in relevant}
        not_ready = sorted(d["metadata"]["name"] for d in relevant if not _deployment_ready(d)) + sorted(missing)
        if not not_ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"deployments not ready after {timeout:.0f}s in {namespace}: {not_ready[:10]}")
        time.sleep(0.25)


def wait_pdbs_settled(client: KubeClient, namespace: str, *, timeout: float = 60.0) -> None:
    """Wait until the disruption controller has observed every PDB's current generation."""

    def settled() -> bool:
        pdbs = client.list_items(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets")
        return all(p.get("status", {}).get("observedGeneration", 0) >= p["metadata"].get("generation", 1) for p in pdbs)

    client.wait_for(f"PDBs in {namespace} to be observed", settled, timeout=timeout)


# -- pods and eviction ------------------------------------------------------------------------------------------


def list_pods(
    client: KubeClient,
    namespace: str | None = None,
    *,
    label_selector: str | None = None,
    node_name: str | None = None,
) -> list[JSON]:
    path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    params: dict[str, str | int | bool] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if node_name:
        params["fieldSelector"] = f"spec.nodeName={node_name}"
    return client.list_items(path, **params)


def evict(
    client: KubeClient, namespace: str, pod_name: str, *, grace_period_seconds: int | None = None
) -> tuple[int, JSON]:
    """POST a policy/v1 Eviction; returns (HTTP status, body) without raising (201 ok, 429 PDB, 404 gone)."""
    body: JSON = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod_name, "namespace": namespace},
    }
    if grace_period_seconds is not None:
        body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
    status, text = client.raw("POST", f"/api/v1/namespaces/{namespace}/pods/{pod_name}/eviction", body)
    try:
        decoded = json.loads(text) if text else {}
    except ValueError:
        decoded = {"message": text}
    return status, decoded


def pod_is_running_ready(pod: JSON) -> bool:
    status = pod.get("status", {})
    if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def mint_token(
    client: KubeClient,
    namespace: str,
    service_account: str,
    *,
    expiration_seconds: int = 3600,
    audiences: Sequence[str] = (),
    bound_to: JSON | None = None,
) -> str:
    """A bound service-account token from the TokenRequest API; `bound_to` (a Secret or Pod object as the API
    returned it): the token is valid only while that object exists."""
    spec: JSON = {"expirationSeconds": expiration_seconds}
    if audiences:
        spec["audiences"] = list(audiences)
    if bound_to is not None:
        meta = bound_to["metadata"]
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": bound_to.get("kind", "Secret"), "name": meta["name"],
                                  "uid": meta["uid"]}  # fmt: skip
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    try:
        result = client.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", body)
    except KubeApiError as exc:
        raise RuntimeError(f"TokenRequest for {namespace}/{service_account} failed: {exc}") from exc
    token: str = result["status"]["token"]
    return token
