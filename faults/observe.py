"""What a scenario sees while it runs, from outside spotq: the cluster polled (nodes, the wave's pods, its PDB) and
spotq's processes sampled (RSS, /readyz).

Polling, not watching: the API server itself is paused and restarted in some scenarios, and a poll needs no
resourceVersion bookkeeping to stay right across that (a relisting watch would miss the deletions made while it
was down). A failed poll is a gap on record, not a guess. Every 0.5 s by default: the figures are compared with a
120 s window and a drain's 5 s settle, so half a second of resolution decides nothing.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench import procstat
from faults.env import Spotq
from testenv import KubeClient, LocalCluster

DRAIN = "spotq.io/drain"
DRAINER = "spotq.io/drainer"
TAINT_PREFIX = "spotq.io/"


@dataclass
class NodeSeen:
    pods: list[tuple[float, int]] = field(default_factory=list)  # (time, workload pods bound) on each change
    marked: float | None = None  # first seen tainted by spotq and cordoned
    drain: list[tuple[float, str]] = field(default_factory=list)  # (time, spotq.io/drain) on each change
    drainer: list[tuple[float, str]] = field(default_factory=list)  # (time, spotq.io/drainer) on each change
    deleted: float | None = None  # the Node object gone

    def pods_at(self, when: float) -> int | None:
        """Workload pods bound to the node as last seen at or before `when` (None: not seen yet)."""
        found = None
        for stamp, count in self.pods:
            if stamp > when:
                break
            found = count
        return found

    def empty_since(self, when: float) -> float | None:
        """From `when` on, the first moment the node was seen with no workload pod (`when` itself if it already
        had none)."""
        if self.pods_at(when) == 0:
            return when
        return next((stamp for stamp, count in self.pods if stamp >= when and count == 0), None)

    def first_drain(self, value: str) -> float | None:
        return next((stamp for stamp, state in self.drain if state == value), None)

    def last_drain(self) -> str | None:
        return self.drain[-1][1] if self.drain else None


@dataclass
class BudgetSeen:
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, currentHealthy, desiredHealthy)

    def violations(self) -> int:
        """Episodes with currentHealthy below desiredHealthy."""
        episodes, below = 0, False
        for _, healthy, desired in self.samples:
            now_below = healthy < desired
            episodes += 1 if now_below and not below else 0
            below = now_below
        return episodes

    def worst_margin(self) -> int | None:
        margins = [healthy - desired for _, healthy, desired in self.samples]
        return min(margins) if margins else None


class ClusterPoller:
    """Polls every `interval` s in a thread; `nodes` lists the nodes to follow (more can be added)."""

    def __init__(self, cluster: LocalCluster, namespace: str, nodes: list[str], *, interval: float = 0.5) -> None:
        assert cluster.pki is not None
        self._client = KubeClient(
            cluster.server_url, cluster.pki.ca_cert, client_cert=cluster.pki.admin_cert,
            client_key=cluster.pki.admin_key, timeout=5,
        )  # fmt: skip
        self.namespace = namespace
        self.interval = interval
        self.nodes: dict[str, NodeSeen] = {name: NodeSeen() for name in nodes}
        self.budgets: dict[str, BudgetSeen] = {}
        self.gaps: list[tuple[float, float]] = []  # (from, to) when polls failed
        self.poll_times: list[float] = []  # when each successful poll's pod list was sent
        self.polls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster-poller", daemon=True)

    def start(self) -> ClusterPoller:
        self._poll()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self._client.close()

    def poll_now(self) -> bool:
        """One poll from the caller's thread (a fresh look right after a fault); False if it failed."""
        try:
            self._poll()
        except Exception:
            return False
        return True

    def pods_seen_after(self, node: str, when: float) -> int | None:
        """Workload pods on `node` as the first poll sent after `when` saw them (None: no poll since)."""
        with self._lock:
            seen = self.nodes.get(node)
            later = next((p for p in self.poll_times if p >= when), None)
            if seen is None or later is None:
                return None
            return seen.pods_at(later)

    def unfinished(self, names: list[str]) -> list[str]:
        """Of `names`, the nodes that still carry pods or whose drain is not on record as over."""
        with self._lock:
            return [
                n
                for n in names
                if n in self.nodes
                and self.nodes[n].deleted is None
                and (
                    (self.nodes[n].pods[-1][1] if self.nodes[n].pods else 0) > 0
                    or self.nodes[n].last_drain() not in ("finished", "timed-out", "blocked")
                )
            ]

    def follow(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                self.nodes.setdefault(name, NodeSeen())

    def _run(self) -> None:
        failing_since: float | None = None
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except Exception:
                failing_since = failing_since or time.time()
                continue
            if failing_since is not None:
                self.gaps.append((failing_since, time.time()))
                failing_since = None
        if failing_since is not None:
            self.gaps.append((failing_since, time.time()))

    def _poll(self) -> None:
        # Each state is stamped with when its list was sent: what it shows was true at that moment or later, so a
        # pod seen on a node at stamp s was still there at s (no poll lag counts against spotq).
        ns = self.namespace
        nodes_at = time.time()
        nodes = self._client.list_items("/api/v1/nodes")
        now = time.time()
        pods = self._client.list_items(f"/api/v1/namespaces/{ns}/pods")
        pdbs_at = time.time()
        pdbs = self._client.list_items(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets")
        bound: dict[str, int] = {}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName") or ""
            bound[node] = bound.get(node, 0) + 1
        present = {n["metadata"]["name"]: n for n in nodes}
        with self._lock:
            self.polls += 1
            self.poll_times.append(now)
            for name, seen in self.nodes.items():
                node = present.get(name)
                if node is None:
                    if seen.pods and seen.deleted is None:
                        seen.deleted = nodes_at
                    continue
                count = bound.get(name, 0)
                if not seen.pods or seen.pods[-1][1] != count:
                    seen.pods.append((now, count))
                annotations = node["metadata"].get("annotations") or {}
                spec = node.get("spec") or {}
                tainted = any(str(t.get("key", "")).startswith(TAINT_PREFIX) for t in spec.get("taints") or [])
                if seen.marked is None and tainted and spec.get("unschedulable"):
                    seen.marked = nodes_at
                for key, series in ((DRAIN, seen.drain), (DRAINER, seen.drainer)):
                    value = annotations.get(key)
                    if value is not None and (not series or series[-1][1] != value):
                        series.append((nodes_at, value))
            for pdb in pdbs:
                status = pdb.get("status") or {}
                if "desiredHealthy" not in status:
                    continue
                seen_budget = self.budgets.setdefault(pdb["metadata"]["name"], BudgetSeen())
                sample = (pdbs_at, int(status.get("currentHealthy", 0)), int(status["desiredHealthy"]))
                if not seen_budget.samples or seen_budget.samples[-1][1:] != sample[1:]:
                    seen_budget.samples.append(sample)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "polls": self.polls,
                "gaps": [(round(a, 2), round(b, 2)) for a, b in self.gaps],
                "nodes": {name: json.loads(json.dumps(vars(seen))) for name, seen in self.nodes.items()},
            }

    def pods_left(self, names: list[str] | None = None) -> int:
        with self._lock:
            chosen = names if names is not None else list(self.nodes)
            return sum((self.nodes[n].pods[-1][1] if self.nodes[n].pods else 0) for n in chosen if n in self.nodes)

    def drain_states(self, names: list[str] | None = None) -> dict[str, str | None]:
        with self._lock:
            chosen = names if names is not None else list(self.nodes)
            return {n: self.nodes[n].last_drain() for n in chosen if n in self.nodes}


@dataclass
class ProcessSample:
    at: float
    rss_mb: float | None
    ready: int  # /readyz status (0: no answer)
    why: str = ""  # what /readyz said when not 200


class ProcessSampler:
    """Samples every live spotq process's RSS (VmRSS) and /readyz every `interval` s."""

    def __init__(self, processes: list[Spotq], *, interval: float = 1.0) -> None:
        self.processes = processes  # the environment's list: processes started later are sampled too
        self.interval = interval
        self.samples: dict[str, list[ProcessSample]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for proc in list(self.processes):
                if not proc.alive() or proc.ready is None:
                    continue
                try:
                    rss = procstat.memory_mb(proc.pid).get("VmRSS")
                except OSError:
                    rss = None
                status, body = proc.process.get("/readyz")
                why = "" if status == 200 else body.strip()[:120]
                self.samples.setdefault(proc.label, []).append(ProcessSample(time.time(), rss, status, why))

    def peak_rss(self) -> float | None:
        values = [s.rss_mb for rows in self.samples.values() for s in rows if s.rss_mb is not None]
        return max(values) if values else None

    def not_ready(self, label: str, since: float, until: float) -> int:
        return sum(1 for s in self.samples.get(label, []) if since <= s.at <= until and s.ready != 200)

    def reasons(self, label: str, since: float, until: float) -> list[tuple[float, str]]:
        """(seconds after `since`, what /readyz said) for each sample between `since` and `until` not ready."""
        return [
            (round(s.at - since, 1), s.why or str(s.ready))
            for s in self.samples.get(label, [])
            if since <= s.at <= until and s.ready != 200
        ]

    def ready_again(self, label: str, since: float) -> float | None:
        """The first sample at or after `since` whose /readyz said 200."""
        return next((s.at for s in self.samples.get(label, []) if s.at >= since and s.ready == 200), None)
