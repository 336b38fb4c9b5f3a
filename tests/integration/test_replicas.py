"""Two queue-mode replicas on one queue drain each node once between them, and take a killed replica's drains over
within a Lease's duration, against a real API server and moto's SQS.

The replicas run as two ServiceAccounts with the Helm chart's rules (its ClusterRole, and its Role on Leases in
spotq's namespace), so the API server's audit log names which replica sent each request: every count below (pods
evicted, nodes drained, when a drain was taken over) comes from that log and the nodes, not from spotq's own lines.
A cluster of its own, for the audit log.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from testenv import LocalCluster, MotoServer, audit_flags
from testenv.spotq import SpotqProcess
from testenv.workloads import NodeInfo

from .helpers import queue_depth, wait_until
from .test_queue_mode import _sample, workload_pods_on

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SPOTQ_NS = "spotq-system"
REPLICAS = ("replica-a", "replica-b")
DRAIN = "spotq.io/drain"
DRAINER = "spotq.io/drainer"


def user(replica: str) -> str:
    return f"system:serviceaccount:{SPOTQ_NS}:{replica}"


def chart_rules() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ClusterRole's and the Lease Role's rules as helm/spotq/templates/rbac.yaml grants them (without the
    optional pods/delete), so the test also proves they suffice."""
    text = (REPO / "helm/spotq/templates/rbac.yaml").read_text()
    text = re.sub(r"\{\{ if .*?\}\}.*?\{\{ end \}\}", "", text)  # the optional pods/delete
    text = re.sub(r"\{\{.*?\}\}", "", text)
    rules = [
        {"apiGroups": [g.strip().strip('"') for g in groups.split(",")], "resources": resources.split(", "),
         "verbs": [v.strip() for v in verbs.split(",") if v.strip()]}
        for groups, resources, verbs in re.findall(
            r"- apiGroups: \[(.*?)\]\s+resources: \[(.*?)\]\s+verbs: \[(.*?)\]", text
        )
    ]  # fmt: skip
    leases = [r for r in rules if r["resources"] == ["leases"]]
    assert leases and leases[0]["apiGroups"] == ["coordination.k8s.io"]
    return [r for r in rules if r["resources"] != ["leases"]], leases


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    """A control plane whose audit log records every request of the two replicas' ServiceAccounts."""
    work = tmp_path_factory.mktemp("replicas")
    policy = work / "audit-policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\n"
        f"rules:\n- level: Metadata\n  users: {json.dumps([user(r) for r in REPLICAS])}\n- level: None\n"
    )
    log = work / "audit.log"
    cluster = LocalCluster(
        workdir=work / "cluster",
        extra_args={"kube-apiserver": audit_flags(policy, log, blocking=True)},  # each request on record at once
    )
    cluster.start()
    try:
        yield cluster, log
    finally:
        cluster.stop()


@dataclass
class Replicas:
    cluster: LocalCluster
    env: dict[str, str]
    tmp: Path
    running: dict[str, SpotqProcess] = field(default_factory=dict)

    def start(self, name: str, **extra: str) -> SpotqProcess:
        kubeconfig = self.cluster.token_kubeconfig(SPOTQ_NS, name)
        env = {
            **self.env,
            **extra,
            "SPOTQ_KUBE__KUBECONFIG": str(kubeconfig),
            "SPOTQ_KUBE__POD_NAME": name,
            "SPOTQ_KUBE__POD_NAMESPACE": SPOTQ_NS,
        }
        process = SpotqProcess(env, log_path=self.tmp / f"{name}.log").start()
        self.running[name] = process
        return process

    def stop_all(self) -> None:
        for process in self.running.values():
            process.stop()


@pytest.fixture
def replicas(audited: tuple[LocalCluster, Path], moto: MotoServer, queue: str, tmp_path: Path) -> Iterator[Replicas]:
    cluster, _ = audited
    client = cluster.client
    if client.get_or_none(f"/api/v1/namespaces/{SPOTQ_NS}") is None:
        cluster.create_namespace(SPOTQ_NS)
        cluster_rules, lease_rules = chart_rules()
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        client.create(f"{rbac}/clusterroles", {"metadata": {"name": "spotq"}, "rules": cluster_rules})
        client.create(f"{rbac}/namespaces/{SPOTQ_NS}/roles", {"metadata": {"name": "spotq"}, "rules": lease_rules})
        for name in REPLICAS:
            cluster.create_service_account(SPOTQ_NS, name)
            subject = [{"kind": "ServiceAccount", "name": name, "namespace": SPOTQ_NS}]
            ref = {"apiGroup": "rbac.authorization.k8s.io", "name": "spotq"}
            client.create(
                f"{rbac}/clusterrolebindings",
                {"metadata": {"name": f"spotq-{name}"}, "roleRef": {**ref, "kind": "ClusterRole"}, "subjects": subject},
            )
            client.create(
                f"{rbac}/namespaces/{SPOTQ_NS}/rolebindings",
                {"metadata": {"name": f"spotq-{name}"}, "roleRef": {**ref, "kind": "Role"}, "subjects": subject},
            )
    env = {
        **moto.env(),
        "SPOTQ_QUEUE__URL": queue,
        "SPOTQ_QUEUE__WAIT_SECONDS": "1",
        "SPOTQ_QUEUE__RETRY_DELAY_SECONDS": "1",
        "SPOTQ_QUEUE__VISIBILITY_TIMEOUT_SECONDS": "60",  # a killed replica's messages stay invisible throughout
        "SPOTQ_AWS__ENDPOINT_URL": moto.endpoint_url,
        "SPOTQ_AWS__REGION": moto.region,
        "SPOTQ_DRAIN__RETRY_MAX_SECONDS": "1",
    }
    group = Replicas(cluster, env, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@dataclass
class Wave:
    """Spot nodes each carrying pods of one Deployment whose PDB allows `disruptions` evictions, nothing more
    (spare capacity on on-demand nodes is cordoned: replacements stay Pending until `release`)."""

    cluster: LocalCluster
    namespace: str
    victims: list[NodeInfo]
    spares: list[NodeInfo]
    ids: dict[str, str]

    def warning(self, victim: NodeInfo) -> str:
        body = _sample("eventbridge/spot-interruption-warning.json", **{"i-0b662ef9931388ba0": victim.instance_id})
        body = body.replace("2025-06-03T14:20:05Z", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return body.replace("1e5527d7-bb36-4607-3370-4164db56a40e", self.ids[victim.node_name])

    def release(self) -> None:
        for spare in self.spares:
            self.cluster.uncordon(spare.node_name)
        self.cluster.client.patch(
            f"/apis/policy/v1/namespaces/{self.namespace}/poddisruptionbudgets/web", {"spec": {"minAvailable": 0}}
        )

    def annotations(self, victim: NodeInfo) -> dict[str, str]:
        found = self.cluster.get_node(victim.node_name)
        assert found is not None
        return dict(found["metadata"].get("annotations") or {})

    def pods_left(self) -> int:
        return sum(len(workload_pods_on(self.cluster, self.namespace, v.node_name)) for v in self.victims)


@pytest.fixture
def wave(audited: tuple[LocalCluster, Path], request: pytest.FixtureRequest) -> Iterator[Any]:
    cluster, _ = audited
    made: list[Wave] = []

    def make(nodes: int, pods: int, disruptions: int) -> Wave:
        namespace = cluster.create_namespace(f"replicas-{uuid.uuid4().hex[:6]}")
        victims = cluster.create_spot_nodes(nodes)
        spares = cluster.create_on_demand_nodes(2)
        for spare in spares:
            cluster.cordon(spare.node_name)
        cluster.create_deployment_with_pdb(
            namespace, "web", pods, min_available=pods - disruptions, termination_grace_period_seconds=1
        )
        cluster.wait_deployments_ready(namespace, ["web"])
        made.append(Wave(cluster, namespace, victims, spares, {v.node_name: str(uuid.uuid4()) for v in victims}))
        assert all(workload_pods_on(cluster, namespace, v.node_name) for v in victims)
        return made[-1]

    yield make
    for done in made:
        cluster.delete_nodes([n.node_name for n in done.victims + done.spares])
        cluster.delete_namespace(done.namespace)


@dataclass
class Audit:
    """The replicas' requests from the audit log: accepted evictions per pod, and which replicas drained each node
    (a drain starts with a list of the node's pods and follows them with a watch; nothing else asks for pods by
    node)."""

    evictions: Counter[str] = field(default_factory=Counter)
    drainers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    first_drain_request: dict[tuple[str, str], float] = field(default_factory=dict)  # (replica, node) → time
    by_replica: Counter[str] = field(default_factory=Counter)
    lease_times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # replica → Lease requests

    @classmethod
    def read(cls, path: Path) -> Audit:
        audit = cls()
        names = {user(r): r for r in REPLICAS}
        for line in path.read_text().splitlines():
            event = json.loads(line)
            replica = names.get((event.get("user") or {}).get("username", ""))
            if replica is None:
                continue
            audit.by_replica[replica] += 1
            ref = event.get("objectRef") or {}
            code = int((event.get("responseStatus") or {}).get("code", 0))
            at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if ref.get("resource") == "leases" and event.get("verb") != "watch":
                audit.lease_times[replica].append(at)
            if ref.get("resource") == "pods" and ref.get("subresource") == "eviction" and 200 <= code < 300:
                audit.evictions[f"{ref.get('namespace')}/{ref.get('name')}"] += 1
            if ref.get("resource") == "pods" and not ref.get("subresource") and event.get("verb") in ("list", "watch"):
                selector = parse_qs(urlsplit(event.get("requestURI", "")).query).get("fieldSelector", [""])[0]
                if selector.startswith("spec.nodeName="):
                    node = selector.removeprefix("spec.nodeName=")
                    audit.drainers[node].add(replica)
                    audit.first_drain_request.setdefault((replica, node), at)
        return audit

    def lease_requests_per_second(self, replica: str) -> float:
        times = sorted(self.lease_times[replica])
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0

    def evicted_twice(self) -> list[str]:
        return sorted(pod for pod, count in self.evictions.items() if count > 1)

    def drained_twice(self, nodes: list[str]) -> list[str]:
        return sorted(node for node in nodes if len(self.drainers.get(node, ())) > 1)


def in_flight(moto: MotoServer, queue: str) -> int:
    attributes = moto.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesNotVisible"])


def start_with_warnings(
    replicas: Replicas, name: str, w: Wave, victims: list[NodeInfo], moto: MotoServer, queue: str
) -> SpotqProcess:
    """Replica `name` with room for one message per node of the wave, then a warning sent for each of `victims`."""
    started = replicas.start(name, SPOTQ_QUEUE__MAX_IN_FLIGHT_MESSAGES=str(len(w.victims)))
    sqs = moto.client("sqs")
    for victim in victims:
        sqs.send_message(QueueUrl=queue, MessageBody=w.warning(victim))
    return started


def test_a_wave_delivered_twice_to_two_replicas_evicts_each_pod_once_and_drains_each_node_once(
    audited: tuple[LocalCluster, Path], replicas: Replicas, wave: Any, moto: MotoServer, queue: str
) -> None:
    """Replica a holds one copy of each warning (it has room for no more); every second copy goes to replica b
    while a's drains wait on the PDB. b marks (nothing left to change) and waits for a's drains instead of running
    its own; when they finish, b's messages are deleted too."""
    _, log = audited
    nodes = 6
    w: Wave = wave(nodes, 24, 0)
    a = start_with_warnings(replicas, "replica-a", w, w.victims, moto, queue)
    wait_until("a holds every first copy", lambda: a.metric("spotq_messages_in_flight") == nodes, timeout=30)
    wait_until(
        "a's drains under way",
        lambda: all(w.annotations(v).get(DRAIN) == "started" for v in w.victims),
        timeout=30,
    )
    b = start_with_warnings(replicas, "replica-b", w, w.victims, moto, queue)
    wait_until("b holds every second copy", lambda: b.metric("spotq_messages_in_flight") == nodes, timeout=30)
    assert a.metric("spotq_messages_in_flight") == nodes  # a received no second copy
    time.sleep(3)  # b has had every chance to start drains of its own
    w.release()
    wait_until("every victim drained", lambda: w.pods_left() == 0, timeout=90)
    wait_until(
        "every drain on record as finished",
        lambda: all(w.annotations(v).get(DRAIN) == "finished" for v in w.victims),
        timeout=30,
    )
    wait_until("every message deleted, both copies", lambda: queue_depth(moto, queue) == 0, timeout=30)

    audit = Audit.read(log)
    names = [v.node_name for v in w.victims]
    print(
        f"evictions accepted: {sum(audit.evictions.values())} for {len(audit.evictions)} pods; drainers per node: "
        f"{ {n: sorted(audit.drainers.get(n, ())) for n in names} }"
    )
    print(
        "lease requests per second (create, update, get; the one watch aside): "
        + ", ".join(f"{r}: {audit.lease_requests_per_second(r):.2f}" for r in REPLICAS)
    )
    assert audit.evicted_twice() == []
    assert audit.drained_twice(names) == []
    assert len(audit.evictions) == 24
    assert {w.annotations(v).get(DRAINER) for v in w.victims} == {"replica-a"}


def test_a_killed_replicas_drains_are_taken_over_by_the_other_within_a_lease(
    audited: tuple[LocalCluster, Path], replicas: Replicas, wave: Any, moto: MotoServer, queue: str
) -> None:
    """Replica a drains four nodes (two pods evicted, the PDB holds the rest) and is killed (SIGKILL): its messages
    stay invisible for a minute. Replica b holds a second copy for two of the nodes and none for the other two;
    it takes all four drains over once a's Lease expires (10 s by default), and finishes them."""
    _, log = audited
    nodes = 4
    w: Wave = wave(nodes, 16, 2)
    a = start_with_warnings(replicas, "replica-a", w, w.victims, moto, queue)
    wait_until(
        "a's drains under way",
        lambda: all(w.annotations(v).get(DRAIN) == "started" for v in w.victims),
        timeout=30,
    )
    wait_until("a's first evictions", lambda: w.pods_left() == 16 - 2, timeout=30)
    b = start_with_warnings(replicas, "replica-b", w, w.victims[:2], moto, queue)
    wait_until("b holds its two copies", lambda: b.metric("spotq_messages_in_flight") == 2, timeout=30)
    assert a.process is not None
    a.process.kill()
    killed = time.time()
    a.process.wait(10)
    w.release()  # the PDB would now let a's drains finish: only b can

    # Within a Lease (10 s) and the drain's settle time (5 s) after the kill, well before SQS hands a's messages back.
    wait_until("every victim drained", lambda: w.pods_left() == 0, timeout=25, every=0.1)
    drained = time.time()
    wait_until(
        "every drain on record as finished",
        lambda: all(w.annotations(v).get(DRAIN) == "finished" for v in w.victims),
        timeout=30,
    )
    assert in_flight(moto, queue) >= nodes  # a's messages: still invisible, no help from SQS

    audit = Audit.read(log)
    names = [v.node_name for v in w.victims]
    resumed = {n: audit.first_drain_request[("replica-b", n)] - killed for n in names}
    print(
        "takeover after the kill (b's first pod request per node, audit log): "
        + ", ".join(f"{n}: {s:.1f}s" for n, s in sorted(resumed.items()))
        + f"; all drained {drained - killed:.1f}s after the kill"
    )
    assert audit.evicted_twice() == []
    assert all(seconds > 0 for seconds in resumed.values()), f"b drained a live replica's node: {resumed}"
    assert all(seconds < 15 for seconds in resumed.values()), f"takeover slower than a Lease: {resumed}"
    assert {w.annotations(v).get(DRAINER) for v in w.victims} == {"replica-b"}
