"""What the benchmark sees during one phase, from watches on Nodes, the workload's Pods, PDBs and Deployments.

Per interrupted node: when it carried the taint and was cordoned, and when its last pod was gone (drained).
Cluster-wide: how many workload pods are Running+Ready on the remaining nodes over time (capacity), how many are
still bound to an interrupted node over time (what the deadline would kill), and the lowest healthy count every PDB
and Deployment reached (PDB safety); per PDB, its allowance against its pods still waiting (`budget_slack`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.budget_slack import BudgetSlack
from bench.watching import JSON, Watch


def _ready(pod: JSON) -> bool:
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


@dataclass
class NodeTimes:
    pods_at_start: int = 0
    marked: float | None = None  # taint (if required) and cordon both seen
    cordoned: float | None = None
    first_pod_gone: float | None = None
    drained: float | None = None


@dataclass
class PdbLow:
    desired_healthy: int = 0
    lowest_healthy: int | None = None
    lowest_margin: int | None = None  # currentHealthy - desiredHealthy; < 0 is a violation
    violations: int = 0


@dataclass
class DeploymentLow:
    min_available: int = 0
    lowest_ready: int | None = None


@dataclass
class Observer:
    """Watches one phase. `interrupted` nodes are followed; pods on `remaining` nodes count as capacity."""

    server_url: str
    ca: Path
    cert: Path
    key: Path
    namespace: str
    interrupted: set[str]
    taint_key: str | None  # None: a cordon alone marks the node (kubectl drain)
    min_available: dict[str, int]  # deployment name → replicas - maxUnavailable
    wanted_pods: int
    nodes: dict[str, NodeTimes] = field(default_factory=dict)
    pdbs: dict[str, PdbLow] = field(default_factory=dict)
    deployments: dict[str, DeploymentLow] = field(default_factory=dict)
    capacity: list[tuple[float, int]] = field(default_factory=list)  # (time, ready pods on remaining nodes)
    capacity_restored: float | None = None
    on_interrupted: list[tuple[float, int]] = field(default_factory=list)  # (time, pods bound to interrupted nodes)
    started: float = 0.0
    slack: BudgetSlack = field(default_factory=BudgetSlack)  # budgets' allowance against pods waiting for it
    _pod_node: dict[str, str] = field(default_factory=dict)
    _pod_ready: dict[str, bool] = field(default_factory=dict)
    _live: dict[str, set[str]] = field(default_factory=dict)
    _ready_remaining: int = 0
    _bound_interrupted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _watches: list[Watch] = field(default_factory=list)
    _counting: bool = False

    def start(self) -> Observer:
        self.nodes = {name: NodeTimes() for name in self.interrupted}
        self.deployments = {name: DeploymentLow(low) for name, low in self.min_available.items()}
        ns = self.namespace
        for path, handler in (
            ("/api/v1/nodes", self._on_node),
            (f"/api/v1/namespaces/{ns}/pods", self._on_pod),
            (f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", self._on_pdb),
            (f"/apis/apps/v1/namespaces/{ns}/deployments", self._on_deployment),
        ):
            watch = Watch(self.server_url, self.ca, self.cert, self.key, path, handler)
            self._watches.append(watch.start())
        with self._lock:
            for name, times in self.nodes.items():
                times.pods_at_start = len(self._live.get(name, ()))
        return self

    def begin(self, when: float) -> None:
        """The interruption starts now: from here on, capacity and lows are recorded."""
        with self._lock:
            self.started = when
            self._counting = True
            self.capacity.append((when, self._ready_remaining))
            self.on_interrupted.append((when, self._bound_interrupted))
            self.slack.begin(when)

    def stop(self) -> None:
        for watch in self._watches:
            watch.stop()
        self._watches.clear()

    # -- handlers (watch threads) -------------------------------------------------------------------------------

    def _on_node(self, kind: str, node: JSON, stamp: float) -> None:
        name = (node.get("metadata") or {}).get("name", "")
        times = self.nodes.get(name)
        if times is None or kind == "DELETED":
            return
        spec = node.get("spec") or {}
        cordoned = bool(spec.get("unschedulable"))
        tainted = self.taint_key is None or any(t.get("key") == self.taint_key for t in spec.get("taints") or [])
        with self._lock:
            if not self._counting:
                return
            if cordoned and times.cordoned is None:
                times.cordoned = stamp
            if cordoned and tainted and times.marked is None:
                times.marked = stamp

    def _on_pod(self, kind: str, pod: JSON, stamp: float) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        node = (pod.get("spec") or {}).get("nodeName") or ""
        with self._lock:
            old_node = self._pod_node.get(uid)
            was_ready = self._pod_ready.get(uid, False) and old_node not in self.interrupted
            if kind == "DELETED":
                self._pod_node.pop(uid, None)
                self._pod_ready.pop(uid, None)
                if old_node:
                    live = self._live.get(old_node)
                    if live is not None and uid in live:
                        live.discard(uid)
                        self._bound_changed(old_node, -1, stamp)
                        self._node_emptied(old_node, live, stamp)
                now_ready = False
            else:
                if node:
                    self._pod_node[uid] = node
                    live = self._live.setdefault(node, set())
                    if uid not in live:
                        live.add(uid)
                        self._bound_changed(node, 1, stamp)
                ready = _ready(pod)
                self._pod_ready[uid] = ready
                now_ready = ready and bool(node) and node not in self.interrupted
            waits = kind != "DELETED" and node in self.interrupted and not meta.get("deletionTimestamp")
            # The layout's PDBs are named for the app label of the pods they cover.
            self.slack.pod(uid, (meta.get("labels") or {}).get("app"), waits, stamp, self._counting)
            if now_ready != was_ready:
                self._ready_remaining += 1 if now_ready else -1
                if self._counting:
                    self.capacity.append((stamp, self._ready_remaining))
                    if self.capacity_restored is None and self._ready_remaining >= self.wanted_pods:
                        self.capacity_restored = stamp

    def _bound_changed(self, node: str, delta: int, stamp: float) -> None:
        if node not in self.interrupted:
            return
        self._bound_interrupted += delta
        if self._counting:
            self.on_interrupted.append((stamp, self._bound_interrupted))

    def _node_emptied(self, node: str, live: set[str], stamp: float) -> None:
        times = self.nodes.get(node)
        if times is None or not self._counting:
            return
        if times.first_pod_gone is None:
            times.first_pod_gone = stamp
        if not live and times.drained is None:
            times.drained = stamp

    def _on_pdb(self, kind: str, pdb: JSON, stamp: float) -> None:
        name = (pdb.get("metadata") or {}).get("name", "")
        status = pdb.get("status") or {}
        if kind == "DELETED" or "currentHealthy" not in status:
            return
        with self._lock:
            self.slack.budget(name, int(status.get("disruptionsAllowed", 0)), stamp, self._counting)
            low = self.pdbs.setdefault(name, PdbLow())
            low.desired_healthy = int(status.get("desiredHealthy", 0))
            if not self._counting:
                return
            healthy = int(status.get("currentHealthy", 0))
            margin = healthy - low.desired_healthy
            low.lowest_healthy = healthy if low.lowest_healthy is None else min(low.lowest_healthy, healthy)
            low.lowest_margin = margin if low.lowest_margin is None else min(low.lowest_margin, margin)
            if margin < 0:
                low.violations += 1

    def _on_deployment(self, kind: str, deployment: JSON, stamp: float) -> None:
        name = (deployment.get("metadata") or {}).get("name", "")
        low = self.deployments.get(name)
        if low is None or kind == "DELETED":
            return
        ready = int((deployment.get("status") or {}).get("readyReplicas", 0))
        with self._lock:
            if self._counting:
                low.lowest_ready = ready if low.lowest_ready is None else min(low.lowest_ready, ready)

    # -- results ------------------------------------------------------------------------------------------------

    def pods_on(self, nodes: Iterable[str]) -> dict[str, list[str]]:
        """Pod UIDs now on each of `nodes` (for a client that evicts by name, see `pod_names`)."""
        with self._lock:
            return {node: sorted(self._live.get(node, ())) for node in nodes}

    def all_drained(self) -> bool:
        with self._lock:
            return all(t.drained is not None for t in self.nodes.values())

    def done(self) -> bool:
        with self._lock:
            return all(t.drained is not None for t in self.nodes.values()) and self.capacity_restored is not None

    def progress(self) -> str:
        """One line for a waiting phase: how many of the followed nodes are marked and drained."""
        with self._lock:
            marked = sum(1 for t in self.nodes.values() if t.marked is not None)
            drained = sum(1 for t in self.nodes.values() if t.drained is not None)
            return f"marked {marked}/{len(self.nodes)}, drained {drained}/{len(self.nodes)}"

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "nodes": {name: vars(t).copy() for name, t in self.nodes.items()},
                "pdbs": {name: vars(p).copy() for name, p in self.pdbs.items()},
                "deployments": {name: vars(d).copy() for name, d in self.deployments.items()},
                "capacity": list(self.capacity),
                "capacity_restored": self.capacity_restored,
                "on_interrupted": list(self.on_interrupted),
                "watch_errors": sum(w.errors for w in self._watches),
                "budget_slack": list(self.slack.series),
            }
