"""The cluster as the audit's checks see it: typed views of nodes, pods, workloads and budgets, built from the raw
objects reading.Snapshot holds. Pure: no I/O, no SDK.

Spot nodes are told by the labels EKS managed node groups, Karpenter and eksctl put on them; a node's pool is its
Karpenter NodePool or node group, else its instance type; its zone is topology.kubernetes.io/zone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spotq.selectors import Selector

JSON = dict[str, Any]

# Label → value (compared case-insensitively) that marks a Spot node.
SPOT_LABELS: tuple[tuple[str, str], ...] = (
    ("eks.amazonaws.com/capacityType", "spot"),
    ("karpenter.sh/capacity-type", "spot"),
    ("lifecycle", "ec2spot"),
)
# The first of these a node carries names its pool.
POOL_LABELS: tuple[str, ...] = (
    "karpenter.sh/nodepool",
    "eks.amazonaws.com/nodegroup",
    "alpha.eksctl.io/nodegroup-name",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
)
ZONE_LABELS: tuple[str, ...] = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")

# The chart's labels (helm/spotq/templates/_helpers.tpl: spotq.labels, spotq.component).
PART_OF = ("app.kubernetes.io/part-of", "spotq")
IMDS_COMPONENT = ("app.kubernetes.io/component", "imds-monitor")
QUEUE_COMPONENT = ("app.kubernetes.io/component", "queue-consumer")

_MIRROR = "kubernetes.io/config.mirror"
_FINISHED = frozenset({"Succeeded", "Failed"})
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "ReplicaSet")


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]

    @property
    def spot(self) -> bool:
        return any(self.labels.get(key, "").lower() == value for key, value in SPOT_LABELS)

    @property
    def pool(self) -> str:
        """'' when the node carries none of POOL_LABELS."""
        return next((self.labels[key] for key in POOL_LABELS if self.labels.get(key)), "")

    @property
    def zone(self) -> str:
        return next((self.labels[key] for key in ZONE_LABELS if self.labels.get(key)), "")


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str


@dataclass(frozen=True)
class Ref:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    controller: Owner | None = None
    grace_seconds: int = 30
    local_volumes: tuple[str, ...] = ()  # "emptyDir NAME" / "hostPath NAME"
    phase: str = "Running"
    ready: bool = True
    terminating: bool = False
    mirror: bool = False

    @property
    def live(self) -> bool:
        """Bound to a node, neither finished nor on its way out: what an interruption would hit."""
        return bool(self.node_name) and self.phase not in _FINISHED and not self.terminating

    @property
    def evictable(self) -> bool:
        """A pod a drain evicts (kubectl drain's rules): not a static pod's mirror, not a DaemonSet's."""
        return not self.mirror and (self.controller is None or self.controller.kind != "DaemonSet")


@dataclass(frozen=True)
class Workload:
    """A Deployment, StatefulSet, or ReplicaSet that no Deployment owns, with the pods it controls."""

    kind: str
    namespace: str
    name: str
    replicas: int
    pods: tuple[Pod, ...] = ()


@dataclass(frozen=True)
class Budget:
    namespace: str
    name: str
    selector: JSON | None  # a metav1.LabelSelector; None selects no pods (policy/v1)
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    disruptions_allowed: int | None = None  # None: the disruption controller has not reported the current spec
    current_healthy: int = 0
    expected_pods: int = 0


@dataclass(frozen=True)
class SpotqDeployment:
    namespace: str
    name: str
    replicas: int
    ready_replicas: int


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...] = ()
    pods: tuple[Pod, ...] = ()  # the audited namespaces' pods
    workloads: tuple[Workload, ...] = ()
    budgets: tuple[Budget, ...] = ()
    imds_daemonsets: tuple[Ref, ...] = ()  # spotq's IMDS DaemonSets
    imds_pods: tuple[Pod, ...] = ()  # pods of those DaemonSets, wherever they run
    queue_consumers: tuple[SpotqDeployment, ...] = ()  # spotq's queue-mode Deployments

    def spot_nodes(self) -> dict[str, Node]:
        return {node.name: node for node in self.nodes if node.spot}


def node_from(obj: JSON) -> Node:
    meta = obj.get("metadata") or {}
    return Node(name=meta.get("name", ""), labels=dict(meta.get("labels") or {}))


def pod_from(obj: JSON) -> Pod:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    controller = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    grace = spec.get("terminationGracePeriodSeconds")
    return Pod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        node_name=spec.get("nodeName") or "",
        labels=dict(meta.get("labels") or {}),
        controller=Owner(controller.get("kind", ""), controller.get("name", "")) if controller else None,
        grace_seconds=30 if grace is None else int(grace),
        local_volumes=tuple(
            f"{kind} {volume.get('name', '')}"
            for volume in spec.get("volumes") or []
            for kind in ("emptyDir", "hostPath")
            if kind in volume
        ),
        phase=status.get("phase", ""),
        ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []),
        terminating=meta.get("deletionTimestamp") is not None,
        mirror=_MIRROR in (meta.get("annotations") or {}),
    )


def budget_from(obj: JSON) -> Budget:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    current = status.get("observedGeneration", 0) >= meta.get("generation", 1)
    allowed = status.get("disruptionsAllowed") if current else None
    return Budget(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        selector=spec.get("selector"),
        min_available=spec.get("minAvailable"),
        max_unavailable=spec.get("maxUnavailable"),
        disruptions_allowed=int(allowed) if allowed is not None else None,
        current_healthy=int(status.get("currentHealthy", 0) or 0),
        expected_pods=int(status.get("expectedPods", 0) or 0),
    )


def spotq_deployment_from(obj: JSON) -> SpotqDeployment:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return SpotqDeployment(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        replicas=_replicas(spec),
        ready_replicas=int(status.get("readyReplicas", 0) or 0),
    )


def workloads_from(
    deployments: Sequence[JSON], statefulsets: Sequence[JSON], replicasets: Sequence[JSON], pods: Sequence[Pod]
) -> tuple[Workload, ...]:
    """Each pod goes to its controller; a ReplicaSet's pods to the Deployment that owns the ReplicaSet."""
    rs_owner: dict[tuple[str, str], Owner] = {}
    standalone: list[JSON] = []
    for rs in replicasets:
        meta = rs.get("metadata") or {}
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
        if owner is None:
            standalone.append(rs)
        else:
            rs_owner[(meta.get("namespace", ""), meta.get("name", ""))] = Owner(owner.get("kind", ""), owner["name"])
    by_owner: dict[tuple[str, str, str], list[Pod]] = {}
    for pod in pods:
        if pod.controller is None:
            continue
        owner = pod.controller
        if owner.kind == "ReplicaSet":
            owner = rs_owner.get((pod.namespace, owner.name), owner)
        by_owner.setdefault((pod.namespace, owner.kind, owner.name), []).append(pod)
    found: list[Workload] = []
    for kind, objects in (("Deployment", deployments), ("StatefulSet", statefulsets), ("ReplicaSet", standalone)):
        for obj in objects:
            meta = obj.get("metadata") or {}
            namespace, name = meta.get("namespace", ""), meta.get("name", "")
            found.append(
                Workload(
                    kind=kind,
                    namespace=namespace,
                    name=name,
                    replicas=_replicas(obj.get("spec") or {}),
                    pods=tuple(by_owner.get((namespace, kind, name), ())),
                )
            )
    return tuple(found)


def in_scope(nodes: Sequence[Node], selector: Selector) -> tuple[Node, ...]:
    """The nodes spotq may act on (SPOTQ_KUBE__NODE_SELECTOR); the others are not its to protect."""
    return tuple(node for node in nodes if selector.matches(node.labels))


def _replicas(spec: JSON) -> int:
    replicas = spec.get("replicas")
    return 1 if replicas is None else int(replicas)


@dataclass
class Snapshot:
    """What reading lists, as the API server answered it."""

    nodes: list[JSON] = field(default_factory=list)
    pods: list[JSON] = field(default_factory=list)  # the audited namespaces' unfinished pods
    deployments: list[JSON] = field(default_factory=list)
    statefulsets: list[JSON] = field(default_factory=list)
    replicasets: list[JSON] = field(default_factory=list)
    budgets: list[JSON] = field(default_factory=list)
    imds_daemonsets: list[JSON] = field(default_factory=list)  # labelled as the chart labels them, anywhere
    imds_pods: list[JSON] = field(default_factory=list)
    queue_deployments: list[JSON] = field(default_factory=list)


def cluster_from(snapshot: Snapshot, selector: Selector) -> Cluster:
    pods = tuple(pod_from(obj) for obj in snapshot.pods)
    return Cluster(
        nodes=in_scope([node_from(obj) for obj in snapshot.nodes], selector),
        pods=pods,
        workloads=workloads_from(snapshot.deployments, snapshot.statefulsets, snapshot.replicasets, pods),
        budgets=tuple(budget_from(obj) for obj in snapshot.budgets),
        imds_daemonsets=tuple(_ref(obj) for obj in _staying(snapshot.imds_daemonsets)),
        imds_pods=tuple(pod_from(obj) for obj in snapshot.imds_pods),
        queue_consumers=tuple(spotq_deployment_from(obj) for obj in _staying(snapshot.queue_deployments)),
    )


def _staying(objects: Sequence[JSON]) -> list[JSON]:
    """spotq being uninstalled protects nothing."""
    return [obj for obj in objects if (obj.get("metadata") or {}).get("deletionTimestamp") is None]


def _ref(obj: JSON) -> Ref:
    meta = obj.get("metadata") or {}
    return Ref(meta.get("namespace", ""), meta.get("name", ""))
