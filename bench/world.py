"""The benchmark's cluster: a local control plane tuned for many kwok nodes, identities whose requests the audit log
counts, and a workload layout that can be laid out again identically for each phase.

Layout: K Spot nodes that accept exactly P pods each (allocatable pods = P) and R on-demand nodes with room for
every replacement. While the workload is placed the on-demand nodes are cordoned, so the Deployments fill the Spot
nodes exactly P pods apiece; then they are uncordoned and take the replacements. The same KxP layout is rebuilt
before each phase (spotq, kubectl drain, NTH tuned and defaults, eviction ceiling), so every contender meets
the same cluster.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testenv import LocalCluster, audit_flags, workloads
from testenv.kube import KubeApiError
from testenv.workloads import NodeInfo

NAMESPACE = "bench"
IDENTITY_NAMESPACE = "spotq-system"
TAINT_PREFIX = "spotq.io"
SPOT_TAINT = f"{TAINT_PREFIX}/spot-interruption"
LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
# Whose marks a phase may leave on a node (spotq's, aws-node-termination-handler's); the next layout removes them.
MARK_PREFIXES = (TAINT_PREFIX, "aws-node-termination-handler")

# Who sends requests; the audit policy records exactly these users, so each one's cost is counted on its own.
IDENTITIES = {
    "spotq": None,  # bound to a copy of the Helm chart's ClusterRole below
    "kubectl-drain": "cluster-admin",
    "evict-ceiling": "cluster-admin",
    "nth": "nth-bench",  # bound to a copy of aws-node-termination-handler's chart ClusterRole below
}

# The Helm chart's rules (helm/spotq/templates/rbac.yaml), so the benchmark also proves they suffice.
SPOTQ_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # New with the PDB-aware eviction admission (spotq/budgets.py); the chart needs the same rule.
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list", "watch"]},
]


# aws-node-termination-handler's chart ClusterRole (config/helm/aws-node-termination-handler/templates/
# clusterrole.yaml in the peers archive), with its default emitKubernetesEvents=false.
NTH_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch", "update"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "get"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": ["extensions"], "resources": ["daemonsets"], "verbs": ["get"]},
    {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get"]},
]

ROLES = {"spotq-bench": SPOTQ_RULES, "nth-bench": NTH_RULES}


def user(identity: str) -> str:
    return f"system:serviceaccount:{IDENTITY_NAMESPACE}:{identity}"


@dataclass(frozen=True)
class Scale:
    nodes: int
    pods_per_node: int

    @classmethod
    def parse(cls, text: str) -> Scale:
        nodes, _, pods = text.lower().partition("x")
        return cls(int(nodes), int(pods) if pods else 10)

    @property
    def label(self) -> str:
        return f"{self.nodes}x{self.pods_per_node}"

    @property
    def pods(self) -> int:
        return self.nodes * self.pods_per_node

    @property
    def remaining_nodes(self) -> int:
        # Room for every replacement with 10 % to spare, 110 pods a node (the EKS default for m5.xlarge: 58;
        # kwok has no IP limits, and fewer, fuller nodes keep the scheduler's per-pod work small).
        return max(3, math.ceil(self.pods * 1.1 / 110))

    @property
    def deployments(self) -> int:
        return max(2, round(self.pods / 100))


@dataclass
class Workload:
    grace_seconds: int
    max_unavailable: str  # the PDB's maxUnavailable, e.g. "20%"
    replicas: dict[str, int] = field(default_factory=dict)

    def min_available(self) -> dict[str, int]:
        share = float(self.max_unavailable.rstrip("%")) / 100 if self.max_unavailable.endswith("%") else None
        result = {}
        for name, replicas in self.replicas.items():
            allowed = math.ceil(replicas * share) if share is not None else int(self.max_unavailable)
            result[name] = replicas - allowed
        return result


def audit_policy(path: Path, users: Sequence[str] | None = None) -> Path:
    """The API server's audit policy: the benchmark's identities (or `users`) only; node writes with their body
    (bench/audit.py times the marks by them), everything else by its metadata."""
    users_json = json.dumps(list(users) if users is not None else [user(identity) for identity in IDENTITIES])
    path.write_text(
        f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Request
  users: {users_json}
  verbs: ["patch", "update"]
  resources: [{{group: "", resources: ["nodes"]}}]
- level: Metadata
  users: {users_json}
- level: None
"""
    )
    return path


def start_cluster(workdir: Path) -> LocalCluster:
    """A control plane whose per-node background work is small enough for 1000+ kwok nodes on two cores.

    kwok renews each node's Lease every leaseDuration/4: at the default 40 s that is 100 writes/s for 1000 nodes,
    which would compete with what we measure. A 3600 s lease (renewed every 15 min) and a node-monitor grace
    period to match keep the nodes Ready with almost no background writes. Pods become Ready 1 s after binding.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    policy = audit_policy(workdir / "audit-policy.yaml")
    cluster = LocalCluster(
        workdir=workdir / "cluster",
        keep_workdir=True,
        pod_ready_delay=1.0,
        extra_args={
            "kube-apiserver": audit_flags(policy, workdir / "audit.log"),
            "kwok": ["--node-lease-duration-seconds=3600"],
            "kube-controller-manager": ["--node-monitor-grace-period=3600s"],
        },
    )
    return cluster.start()


def create_identities(cluster: LocalCluster) -> dict[str, Path]:
    """ServiceAccounts (token kubeconfigs) for spotq, kubectl drain, the eviction-ceiling client and NTH."""
    client = cluster.client
    cluster.create_namespace(IDENTITY_NAMESPACE)
    for name, rules in ROLES.items():
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
                "rules": rules}  # fmt: skip
        client.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", role, exist_ok=True)
    kubeconfigs = {}
    for identity, cluster_role in IDENTITIES.items():
        cluster.create_service_account(IDENTITY_NAMESPACE, identity)
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"bench-{identity}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role or "spotq-bench",
            },
            "subjects": [{"kind": "ServiceAccount", "name": identity, "namespace": IDENTITY_NAMESPACE}],
        }
        client.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding, exist_ok=True)
        kubeconfigs[identity] = cluster.token_kubeconfig(
            IDENTITY_NAMESPACE, identity, expiration_seconds=6 * 3600, path=cluster.workdir / f"{identity}.kubeconfig"
        )
    return kubeconfigs


@dataclass
class Layout:
    cluster: LocalCluster
    scale: Scale
    workload: Workload
    spot: list[NodeInfo] = field(default_factory=list)
    remaining: list[NodeInfo] = field(default_factory=list)

    @property
    def spot_names(self) -> list[str]:
        return [n.node_name for n in self.spot]

    @property
    def remaining_names(self) -> list[str]:
        return [n.node_name for n in self.remaining]

    def create_nodes(self, say: Callable[[str], None]) -> None:
        started = time.monotonic()
        k, p = self.scale.nodes, self.scale.pods_per_node
        self.spot = self.cluster.create_spot_nodes(k, pods=p, timeout=600, workers=16)
        self.remaining = self.cluster.create_on_demand_nodes(self.scale.remaining_nodes, pods=110, timeout=600)
        say(f"{k} Spot nodes ({p} pods each) + {len(self.remaining)} on-demand nodes Ready "
            f"in {time.monotonic() - started:.0f}s")  # fmt: skip

    def lay_out(self, say: Callable[[str], None], *, max_unavailable: str | None = None) -> None:
        """(Re)build the KxP layout from scratch: no workload pods, clean nodes, Deployments placed, PDBs settled."""
        started = time.monotonic()
        client = self.cluster.client
        self._clear_workload()
        self._clean_spot_nodes()
        self.cordon(self.remaining_names, True)
        if max_unavailable is not None:
            self.workload.max_unavailable = max_unavailable
        self.cluster.create_namespace(NAMESPACE)
        names = [f"app-{i:03d}" for i in range(self.scale.deployments)]
        base, extra = divmod(self.scale.pods, len(names))
        self.workload.replicas = {name: base + (1 if i < extra else 0) for i, name in enumerate(names)}
        for name, replicas in self.workload.replicas.items():
            workloads.create_deployment_with_pdb(
                client,
                NAMESPACE,
                name,
                replicas,
                max_unavailable=self.workload.max_unavailable,
                termination_grace_period_seconds=self.workload.grace_seconds,
                cpu_request="10m",
                memory_request="16Mi",
            )
        workloads.wait_deployments_ready(client, NAMESPACE, names, timeout=900)
        self._check_placement()
        self.cordon(self.remaining_names, False)
        self._wait_pdbs()
        say(f"layout {self.scale.label}: {len(names)} Deployments, {self.scale.pods} pods, PDB maxUnavailable "
            f"{self.workload.max_unavailable}, grace {self.workload.grace_seconds}s, "
            f"ready in {time.monotonic() - started:.0f}s")  # fmt: skip

    def _clear_workload(self) -> None:
        client = self.cluster.client
        for dep in client.list_items(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"):
            client.delete(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{dep['metadata']['name']}")
        for pdb in client.list_items(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets"):
            client.delete(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/{pdb['metadata']['name']}")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            # A collection delete with grace 0 removes the pods at once (their ReplicaSets are going too).
            # Thousands of pods can take longer than the client's timeout; the deletion goes on anyway.
            with contextlib.suppress(OSError):
                client.raw(
                    "DELETE",
                    f"/api/v1/namespaces/{NAMESPACE}/pods",
                    {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
                )
            pods = client.get(f"/api/v1/namespaces/{NAMESPACE}/pods", limit=1)
            replicasets = client.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets", limit=1)
            if not pods.get("items") and not replicasets.get("items"):
                return
            time.sleep(1.0)
        raise TimeoutError(f"workload pods in {NAMESPACE} still there after 300 s")

    def _clean_spot_nodes(self) -> None:
        """Remove every mark a previous phase left: taints, cordon, spotq's and NTH's labels and annotations."""
        client = self.cluster.client

        def clean(name: str) -> None:
            node = client.get(f"/api/v1/nodes/{name}")
            meta, spec = node["metadata"], node.get("spec") or {}
            taints = [t for t in spec.get("taints") or [] if not t["key"].startswith(MARK_PREFIXES)]
            annotations = {k: None for k in meta.get("annotations") or {} if k.startswith(MARK_PREFIXES)}
            labels = {k: None for k in meta.get("labels") or {} if k.startswith(MARK_PREFIXES)} | {LB_LABEL: None}
            patch: dict[str, Any] = {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"unschedulable": None, "taints": taints or None},
            }
            client.patch(f"/api/v1/nodes/{name}", patch)

        client.map_concurrently(clean, self.spot_names, workers=16)

    def cordon(self, names: list[str], unschedulable: bool) -> None:
        client = self.cluster.client
        client.map_concurrently(lambda name: workloads.cordon(client, name, unschedulable=unschedulable), names)

    def _check_placement(self) -> None:
        counts: dict[str, int] = {}
        for pod in self.cluster.client.list_items(f"/api/v1/namespaces/{NAMESPACE}/pods"):
            node = pod["spec"].get("nodeName", "")
            counts[node] = counts.get(node, 0) + 1
        wrong = {n: counts.get(n, 0) for n in self.spot_names if counts.get(n, 0) != self.scale.pods_per_node}
        if wrong:
            sample = dict(list(wrong.items())[:5])
            raise RuntimeError(f"{len(wrong)} Spot nodes do not carry {self.scale.pods_per_node} pods: {sample}")

    def _wait_pdbs(self) -> None:
        """Until the disruption controller has counted every pod: evictions are allowed from the first request."""
        client = self.cluster.client
        wanted = self.workload.min_available()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            pdbs = client.list_items(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets")
            settled = [
                p
                for p in pdbs
                if (p.get("status") or {}).get("currentHealthy") == self.workload.replicas.get(p["metadata"]["name"])
                and (p.get("status") or {}).get("desiredHealthy") == wanted.get(p["metadata"]["name"])
            ]
            if len(settled) == len(wanted):
                return
            time.sleep(0.5)
        raise TimeoutError("PDBs did not settle within 300 s")


def pod_names_on(cluster: LocalCluster, nodes: list[str]) -> list[tuple[str, str]]:
    """(name, uid) of every workload pod on `nodes`, from one list."""
    wanted = set(nodes)
    return [
        (pod["metadata"]["name"], pod["metadata"]["uid"])
        for pod in cluster.client.list_items(f"/api/v1/namespaces/{NAMESPACE}/pods")
        if pod["spec"].get("nodeName") in wanted
    ]


def index_only_node(name: str, instance_id: str) -> dict[str, Any]:
    """An EKS-sized Node that kwok does not manage (no kwok annotation): only spotq's node index reads it."""
    node = workloads.node_manifest(name, instance_id, annotations={})
    node["metadata"]["annotations"].pop(workloads.KWOK_ANNOTATION, None)
    node["metadata"]["annotations"].update(
        {
            "alpha.kubernetes.io/provided-node-ip": "10.0.0.1",
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
        }
    )
    node["status"]["images"] = [
        {"names": [f"registry.invalid/team-{i}/service@sha256:{i:064x}", f"registry.invalid/team-{i}/service:v{i}"],
         "sizeBytes": 50_000_000 + i}
        for i in range(12)
    ]  # fmt: skip
    node["status"]["conditions"] = [
        {"type": kind, "status": "False", "reason": f"Kubelet{kind}", "message": "kubelet is posting ready status"}
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ]
    return node


def create_index_nodes(cluster: LocalCluster, count: int) -> list[str]:
    client = cluster.client
    names = [f"index-{i:05d}.ec2.internal" for i in range(count)]

    def create(name: str) -> None:
        try:
            client.create("/api/v1/nodes", index_only_node(name, workloads.new_instance_id()))
        except KubeApiError as exc:
            if exc.status != 409:
                raise

    client.map_concurrently(create, names, workers=16)
    return names
