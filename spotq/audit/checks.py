"""The audit's checks: pure functions from the cluster's views (views.Cluster) and spotq's limits to findings.

Each check looks only at what an interruption would hit: pods bound to Spot nodes in spotq's scope that a drain
would evict (DaemonSet pods and static pods stay with their node), and the workloads owning them. A check's id
(`Finding.check`) and its fields are stable: CI jobs filter on them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from spotq.budgets import _matches as selector_matches
from spotq.notices import SPOT_WARNING_LEAD
from spotq.settings import Settings

from .views import IMDS_COMPONENT, PART_OF, QUEUE_COMPONENT, Budget, Cluster, Node, Pod, Workload


class Severity(enum.StrEnum):
    HIGH = "high"  # the next interruption takes a workload (or a node's protection) down
    WARNING = "warning"  # it loses data, time or redundancy


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    kind: str  # of the object named: Deployment, StatefulSet, ReplicaSet, Job, Pod, Node, ...
    namespace: str  # "" for cluster-wide objects
    name: str
    detail: str


@dataclass(frozen=True)
class Limits:
    """What spotq's settings promise a pod on an interrupted node."""

    warning_seconds: float = SPOT_WARNING_LEAD.total_seconds()
    safety_margin_seconds: float = 10.0
    delete_emptydir_data: bool = True
    evict_unmanaged_pods: bool = True
    force_delete_seconds: float = 0.0  # SPOTQ_DRAIN__FORCE_DELETE_BEFORE_DEADLINE_SECONDS
    queue_configured: bool = False

    @property
    def window_seconds(self) -> float:
        """How long an evicted pod has to stop: the warning's lead less spotq's safety margin."""
        return max(0.0, self.warning_seconds - self.safety_margin_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            safety_margin_seconds=settings.drain.safety_margin_seconds,
            delete_emptydir_data=settings.drain.delete_emptydir_data,
            evict_unmanaged_pods=settings.drain.evict_unmanaged_pods,
            force_delete_seconds=settings.drain.force_delete_before_deadline_seconds,
            queue_configured=bool(settings.queue.url),
        )


Check = Callable[[Cluster, Limits], list[Finding]]


# -- what an interruption hits ----------------------------------------------------------------------------------


def _on_spot(pods: Iterable[Pod], spot: dict[str, Node]) -> list[Pod]:
    return [pod for pod in pods if pod.live and pod.evictable and pod.node_name in spot]


def _exposed_workloads(cluster: Cluster) -> list[tuple[Workload, list[Pod]]]:
    """Workloads with at least one pod on a Spot node, with their live pods (wherever they run)."""
    spot = cluster.spot_nodes()
    exposed = []
    for workload in cluster.workloads:
        if _on_spot(workload.pods, spot):
            exposed.append((workload, [pod for pod in workload.pods if pod.live]))
    return exposed


def _subjects(cluster: Cluster) -> dict[tuple[str, str, str], list[Pod]]:
    """Evictable live pods on Spot nodes by what a finding names: their workload, else their controller (a Job,
    say), else the pod itself. Keys are (kind, namespace, name)."""
    spot = cluster.spot_nodes()
    workload_of = {
        (pod.namespace, pod.name): (workload.kind, workload.namespace, workload.name)
        for workload in cluster.workloads
        for pod in workload.pods
    }
    subjects: dict[tuple[str, str, str], list[Pod]] = {}
    for pod in _on_spot(cluster.pods, spot):
        key = workload_of.get((pod.namespace, pod.name))
        if key is None:
            key = (
                (pod.controller.kind, pod.namespace, pod.controller.name)
                if pod.controller
                else ("Pod", pod.namespace, pod.name)
            )
        subjects.setdefault(key, []).append(pod)
    return subjects


def _finding(check: str, severity: Severity, workload: Workload, detail: str) -> Finding:
    return Finding(check, severity, workload.kind, workload.namespace, workload.name, detail)


# -- replicas and placement -------------------------------------------------------------------------------------


def single_replica(cluster: Cluster, limits: Limits) -> list[Finding]:
    """One replica on a Spot node: an interruption takes the workload down until its pod runs elsewhere."""
    spot = cluster.spot_nodes()
    findings = []
    for workload, pods in _exposed_workloads(cluster):
        if workload.replicas == 1:
            node = spot[_on_spot(pods, spot)[0].node_name]
            findings.append(
                _finding(
                    "single-replica",
                    Severity.HIGH,
                    workload,
                    f"1 replica, on Spot node {node.name}: down from the interruption until it runs elsewhere",
                )
            )
    return findings


def _one_place(check: str, cluster: Cluster, where: Callable[[Node], str], what: str) -> list[Finding]:
    spot = cluster.spot_nodes()
    findings = []
    for workload, pods in _exposed_workloads(cluster):
        if workload.replicas < 2 or any(pod.node_name not in spot for pod in pods):
            continue
        places = {where(spot[pod.node_name]) for pod in pods}
        if len(places) == 1 and "" not in places:
            findings.append(
                _finding(
                    check,
                    Severity.HIGH,
                    workload,
                    f"all {len(pods)} pods on Spot nodes of {what} {places.pop()}: one reclaim there takes them all",
                )
            )
    return findings


def spot_single_pool(cluster: Cluster, limits: Limits) -> list[Finding]:
    """All replicas on Spot nodes of one pool (NodePool, node group, else instance type)."""
    return _one_place("spot-single-pool", cluster, lambda node: node.pool, "pool")


def spot_single_zone(cluster: Cluster, limits: Limits) -> list[Finding]:
    """All replicas on Spot nodes of one availability zone."""
    return _one_place("spot-single-zone", cluster, lambda node: node.zone, "zone")


# -- disruption budgets -----------------------------------------------------------------------------------------


class _BudgetIndex:
    """Which budgets select a pod, without trying every budget of the namespace on every pod: a budget with
    matchLabels is filed under one of its pairs, and only pods carrying that pair are tried against it."""

    def __init__(self, budgets: Iterable[Budget]) -> None:
        self._by_pair: dict[tuple[str, str, str], list[Budget]] = {}
        self._scan: dict[str, list[Budget]] = {}  # matchExpressions only, or {} (every pod of the namespace)
        for budget in budgets:
            if budget.selector is None:
                continue  # policy/v1: selects no pods
            pairs = sorted((budget.selector.get("matchLabels") or {}).items())
            if pairs:
                key, value = pairs[0]
                self._by_pair.setdefault((budget.namespace, key, value), []).append(budget)
            else:
                self._scan.setdefault(budget.namespace, []).append(budget)

    def of_pod(self, pod: Pod) -> list[Budget]:
        candidates = list(self._scan.get(pod.namespace, ()))
        for key, value in pod.labels.items():
            candidates.extend(self._by_pair.get((pod.namespace, key, value), ()))
        return [budget for budget in candidates if selector_matches(budget.selector, pod.labels)]

    def of_pods(self, pods: Iterable[Pod]) -> list[Budget]:
        found: dict[tuple[str, str], Budget] = {}
        for pod in pods:
            for budget in self.of_pod(pod):
                found.setdefault((budget.namespace, budget.name), budget)
        return list(found.values())


def _scaled(value: int | str, total: int) -> int:
    """An int-or-percent of `total`, rounded up as the disruption controller rounds both fields."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(float(value[:-1]) * total / 100)
    return int(value)


def _why_no_disruption(budget: Budget, replicas: int) -> str | None:
    if budget.max_unavailable is not None and _scaled(budget.max_unavailable, replicas) <= 0:
        return f"maxUnavailable {budget.max_unavailable}"
    if budget.min_available is not None and _scaled(budget.min_available, replicas) >= replicas:
        return f"minAvailable {budget.min_available} with {replicas} replicas"
    healthy = budget.expected_pods > 0 and budget.current_healthy >= budget.expected_pods
    if budget.disruptions_allowed == 0 and healthy:
        return f"disruptionsAllowed 0 with all {budget.expected_pods} pods healthy"
    return None


def missing_budget(cluster: Cluster, limits: Limits) -> list[Finding]:
    """No PodDisruptionBudget: a drain may evict every replica at once."""
    index = _BudgetIndex(cluster.budgets)
    findings = []
    for workload, pods in _exposed_workloads(cluster):
        if not index.of_pods(pods):
            findings.append(
                _finding(
                    "no-pdb",
                    Severity.WARNING,
                    workload,
                    "no PodDisruptionBudget selects its pods: a drain may evict all of them at once",
                )
            )
    return findings


def blocking_budget(cluster: Cluster, limits: Limits) -> list[Finding]:
    """A budget that allows no disruption: the drain waits until the node is gone and the pods die with it (or,
    with force-delete on, spotq deletes them shortly before the deadline, past their budget)."""
    if limits.force_delete_seconds > 0:
        severity = Severity.WARNING
        outcome = (
            f"spotq deletes its pods on an interrupted node {limits.force_delete_seconds:g} s before the deadline "
            "(SPOTQ_DRAIN__FORCE_DELETE_BEFORE_DEADLINE_SECONDS), past the budget"
        )
    else:
        severity, outcome = Severity.HIGH, "its pods on an interrupted node stop only when the node does"
    index = _BudgetIndex(cluster.budgets)
    findings = []
    for workload, pods in _exposed_workloads(cluster):
        for budget in index.of_pods(pods):
            reason = _why_no_disruption(budget, workload.replicas)
            if reason is not None:
                detail = f"PodDisruptionBudget {budget.name} allows no eviction ({reason}): {outcome}"
                findings.append(_finding("pdb-blocks-eviction", severity, workload, detail))
    return findings


def overlapping_budgets(cluster: Cluster, limits: Limits) -> list[Finding]:
    """A pod under more than one budget: the Eviction API refuses it outright (500), whatever the budgets allow."""
    index = _BudgetIndex(cluster.budgets)
    findings = []
    for workload, pods in _exposed_workloads(cluster):
        for pod in pods:
            names = sorted(budget.name for budget in index.of_pod(pod))
            if len(names) > 1:
                findings.append(
                    _finding(
                        "pdb-overlap",
                        Severity.HIGH,
                        workload,
                        f"pod {pod.name} is selected by {len(names)} PodDisruptionBudgets ({', '.join(names)}): "
                        "the Eviction API refuses to evict it",
                    )
                )
                break
    return findings


# -- what the pods on Spot nodes lose ---------------------------------------------------------------------------


def grace_too_long(cluster: Cluster, limits: Limits) -> list[Finding]:
    """terminationGracePeriodSeconds beyond the window: the instance is gone before the pod has stopped."""
    window = limits.window_seconds
    findings = []
    for (kind, namespace, name), pods in _subjects(cluster).items():
        longest = max(pod.grace_seconds for pod in pods)
        if longest > window:
            findings.append(
                Finding(
                    "grace-too-long",
                    Severity.WARNING,
                    kind,
                    namespace,
                    name,
                    f"terminationGracePeriodSeconds {longest} > the {window:g} s an interruption leaves "
                    f"({limits.warning_seconds:g} s warning less SPOTQ_DRAIN__SAFETY_MARGIN_SECONDS "
                    f"{limits.safety_margin_seconds:g}): killed before it has stopped",
                )
            )
    return findings


def local_storage(cluster: Cluster, limits: Limits) -> list[Finding]:
    """emptyDir or hostPath volumes on a Spot node: their data goes with the instance."""
    findings = []
    for (kind, namespace, name), pods in _subjects(cluster).items():
        volumes = sorted({volume for pod in pods for volume in pod.local_volumes})
        if not volumes:
            continue
        detail = f"local volumes on Spot nodes ({', '.join(volumes)}): their data is lost with the node"
        if not limits.delete_emptydir_data and any(v.startswith("emptyDir ") for v in volumes):
            detail += "; spotq does not evict pods with emptyDir (SPOTQ_DRAIN__DELETE_EMPTYDIR_DATA=false)"
        findings.append(Finding("local-storage", Severity.WARNING, kind, namespace, name, detail))
    return findings


def bare_pods(cluster: Cluster, limits: Limits) -> list[Finding]:
    """A pod without a controller on a Spot node: nothing recreates it once the node is gone."""
    findings = []
    for pod in _on_spot(cluster.pods, cluster.spot_nodes()):
        if pod.controller is None:
            detail = f"no controller, on Spot node {pod.node_name}: nothing recreates it after an interruption"
            if not limits.evict_unmanaged_pods:
                detail += "; spotq does not evict it (SPOTQ_DRAIN__EVICT_UNMANAGED_PODS=false)"
            findings.append(Finding("bare-pod", Severity.HIGH, "Pod", pod.namespace, pod.name, detail))
    return findings


# -- spotq itself -----------------------------------------------------------------------------------------------


def imds_coverage(cluster: Cluster, limits: Limits) -> list[Finding]:
    """With spotq's IMDS DaemonSet installed, every Spot node needs one of its pods, running and ready."""
    if not cluster.imds_daemonsets:
        return []
    daemonsets = {(ds.namespace, ds.name) for ds in cluster.imds_daemonsets}
    on_node: dict[str, list[Pod]] = {}
    for pod in cluster.imds_pods:
        owner = pod.controller
        if owner and owner.kind == "DaemonSet" and (pod.namespace, owner.name) in daemonsets and pod.live:
            on_node.setdefault(pod.node_name, []).append(pod)
    named = ", ".join(sorted(str(ds) for ds in cluster.imds_daemonsets))
    findings = []
    for node in cluster.spot_nodes().values():
        pods = on_node.get(node.name, [])
        if any(pod.ready for pod in pods):
            continue
        if pods:
            detail = f"spotq's IMDS pod {pods[0].namespace}/{pods[0].name} is not ready"
        else:
            detail = f"no pod of spotq's IMDS DaemonSet ({named})"
        detail += ": nothing on this node watches for its interruption warning"
        findings.append(Finding("imds-pod-missing", Severity.HIGH, "Node", "", node.name, detail))
    return findings


def queue_consumer(cluster: Cluster, limits: Limits) -> list[Finding]:
    """With a queue configured (SPOTQ_QUEUE__URL), spotq's queue-mode Deployment must have a ready replica."""
    if not limits.queue_configured:
        return []
    if not cluster.queue_consumers:
        labels = f"{PART_OF[0]}={PART_OF[1]}, {QUEUE_COMPONENT[0]}={QUEUE_COMPONENT[1]}"
        return [
            Finding(
                "queue-consumer-down",
                Severity.HIGH,
                "Deployment",
                "",
                "",
                f"no spotq queue-mode Deployment (labels {labels}): nobody consumes the queue's interruption events",
            )
        ]
    return [
        Finding(
            "queue-consumer-down",
            Severity.HIGH,
            "Deployment",
            consumer.namespace,
            consumer.name,
            f"0 of {consumer.replicas} replicas ready: nobody consumes the queue's interruption events",
        )
        for consumer in cluster.queue_consumers
        if consumer.ready_replicas < 1
    ]


def no_handler(cluster: Cluster, limits: Limits) -> list[Finding]:
    """Spot nodes and neither spotq mode installed (the queue check speaks for itself when a queue is set)."""
    spot = cluster.spot_nodes()
    if not spot or cluster.imds_daemonsets or cluster.queue_consumers or limits.queue_configured:
        return []
    return [
        Finding(
            "no-handler",
            Severity.HIGH,
            "Cluster",
            "",
            "",
            f"{len(spot)} Spot nodes and no spotq to drain them: no IMDS DaemonSet ({IMDS_COMPONENT[0]}="
            f"{IMDS_COMPONENT[1]}) and no queue-mode Deployment ({QUEUE_COMPONENT[0]}={QUEUE_COMPONENT[1]}) "
            f"labelled {PART_OF[0]}={PART_OF[1]}",
        )
    ]


CHECKS: tuple[Check, ...] = (
    single_replica,
    spot_single_pool,
    spot_single_zone,
    missing_budget,
    blocking_budget,
    overlapping_budgets,
    grace_too_long,
    local_storage,
    bare_pods,
    imds_coverage,
    queue_consumer,
    no_handler,
)

_SEVERITY_ORDER = {Severity.HIGH: 0, Severity.WARNING: 1}


def run(cluster: Cluster, limits: Limits, checks: Sequence[Check] = CHECKS) -> list[Finding]:
    """Every check's findings, most severe first, then by check, namespace, kind and name (a stable order)."""
    return ordered([finding for check in checks for finding in check(cluster, limits)])


def ordered(findings: Sequence[Finding]) -> list[Finding]:
    """Most severe first, then by check, namespace, kind and name (a stable order)."""
    return sorted(findings, key=lambda f: (_SEVERITY_ORDER[f.severity], f.check, f.namespace, f.kind, f.name, f.detail))
