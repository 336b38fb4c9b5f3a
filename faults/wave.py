"""A wave: K Spot nodes carrying exactly P pods each of one Deployment whose PodDisruptionBudget limits how many may
be down at once, on-demand spares with room for every replacement, and the bodies that interrupt them.

While the Deployment is placed the spares are cordoned and the Spot nodes accept exactly P pods (allocatable pods
= P), so every Spot node starts with P pods; then the spares take the replacements. The PDB (maxUnavailable,
default 10 %) makes a drain of the wave take a while — replacements must be Ready (3 s after binding by default,
an app that starts in seconds) before the next eviction is allowed — so there is a "mid-wave" in which to inject a
fault.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from testenv import LocalCluster, workloads
from testenv.workloads import NodeInfo

APP = "web"
WINDOW_SECONDS = 120.0  # a Spot warning's two minutes
REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass(frozen=True)
class Shape:
    nodes: int = 10
    pods_per_node: int = 4
    grace_seconds: int = 5
    max_unavailable: str = "10%"
    spares: int | None = None  # on-demand nodes for the replacements (default: enough for every pod)
    room: int = 0  # pods each Spot node accepts beyond P; with room the layout is the scheduler's, not exact
    ready_delay: float = 3.0  # s from a pod's binding to Ready (kwok): how long a replacement takes to serve

    @property
    def pods(self) -> int:
        return self.nodes * self.pods_per_node

    @property
    def spare_nodes(self) -> int:
        return self.spares if self.spares is not None else max(2, math.ceil(self.pods * 1.2 / 100))

    @property
    def capacity(self) -> int:
        return self.pods_per_node + self.room


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def spot_warning(instance_id: str, when: float) -> str:
    """An EventBridge-delivered Spot interruption warning (its `time`: `when`, whole seconds)."""
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "account": ACCOUNT,
            "time": _stamp(when),
            "region": REGION,
            "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "instance-action": "terminate"},
        }
    )


def state_change(instance_id: str, when: float, state: str = "shutting-down") -> str:
    """An EC2 Instance State-change Notification for the instance."""
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": ACCOUNT,
            "time": _stamp(when),
            "region": REGION,
            "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "state": state},
        }
    )


@dataclass
class Wave:
    cluster: LocalCluster
    shape: Shape
    namespace: str = "wave"
    nodes: list[NodeInfo] = field(default_factory=list)
    spares: list[NodeInfo] = field(default_factory=list)
    event_time: float = 0.0  # the warnings' `time` (whole seconds); the deadline is 120 s later

    @property
    def names(self) -> list[str]:
        return [n.node_name for n in self.nodes]

    @property
    def instance_of(self) -> dict[str, str]:
        return {n.node_name: n.instance_id for n in self.nodes}

    @property
    def node_of(self) -> dict[str, str]:
        return {n.instance_id: n.node_name for n in self.nodes}

    @property
    def deadline(self) -> float:
        return self.event_time + WINDOW_SECONDS

    def build(self, *, extra_capacity: dict[int, int] | None = None) -> Wave:
        """Create the nodes and the workload; returns once every pod is Ready where it belongs and the PDB allows
        evictions. `extra_capacity`: node index → pods of room beyond P (for a pod placed there beforehand)."""
        shape, cluster, client = self.shape, self.cluster, self.cluster.client
        extra = extra_capacity or {}
        plain = [i for i in range(shape.nodes) if i not in extra]
        self.nodes = [NodeInfo("", "")] * shape.nodes
        made = cluster.create_spot_nodes(len(plain), pods=shape.capacity, timeout=300) if plain else []
        for i, info in zip(plain, made, strict=True):
            self.nodes[i] = info
        for i, more in extra.items():
            (self.nodes[i],) = cluster.create_spot_nodes(1, pods=shape.capacity + more, timeout=300)
        spares = shape.spare_nodes
        self.spares = cluster.create_on_demand_nodes(spares, pods=110, timeout=300) if spares else []
        for spare in self.spares:
            cluster.cordon(spare.node_name)
        cluster.create_namespace(self.namespace)
        budget = int(shape.max_unavailable) if shape.max_unavailable.isdigit() else shape.max_unavailable
        workloads.create_deployment_with_pdb(
            client, self.namespace, APP, shape.pods, max_unavailable=budget,
            termination_grace_period_seconds=shape.grace_seconds, cpu_request="10m", memory_request="16Mi",
            annotations={"pod-ready.stage.kwok.x-k8s.io/delay": f"{round(shape.ready_delay * 1000)}ms"},
        )  # fmt: skip
        workloads.wait_deployments_ready(client, self.namespace, [APP], timeout=600)
        counts = self.pods_by_node()
        wrong = {n: counts.get(n, 0) for n in self.names if counts.get(n, 0) != shape.pods_per_node}
        if wrong and not shape.room:
            raise RuntimeError(f"Spot nodes without {shape.pods_per_node} pods: {wrong}")
        for spare in self.spares:
            cluster.uncordon(spare.node_name)
        self._wait_budget()
        return self

    def _wait_budget(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        path = f"/apis/policy/v1/namespaces/{self.namespace}/poddisruptionbudgets/{APP}"
        while time.monotonic() < deadline:
            status = self.cluster.client.get(path).get("status") or {}
            if status.get("currentHealthy") == self.shape.pods and int(status.get("disruptionsAllowed", 0)) > 0:
                return
            time.sleep(0.5)
        raise TimeoutError("the PDB did not settle")

    def pods_by_node(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pod in self.cluster.list_pods(self.namespace):
            node = pod["spec"].get("nodeName") or ""
            counts[node] = counts.get(node, 0) + 1
        return counts

    def replace_node(self, name: str) -> NodeInfo:
        """The instance behind `name` is gone: delete its Node and add a fresh Spot node (a new instance)."""
        self.cluster.delete_nodes([name])
        (fresh,) = self.cluster.create_spot_nodes(1, pods=self.shape.capacity, timeout=300)
        self.nodes = [fresh if n.node_name == name else n for n in self.nodes]
        return fresh

    def warnings(self, when: float | None = None, nodes: list[NodeInfo] | None = None) -> list[str]:
        """One Spot warning per node (default: the whole wave), stamped `when` (default: now)."""
        self.event_time = float(math.floor(when if when is not None else time.time()))
        return [spot_warning(n.instance_id, self.event_time) for n in nodes or self.nodes]
