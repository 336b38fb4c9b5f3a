"""`spotq audit`'s checks, one at a time, on hand-built views: each trips on the risk it names and stays quiet on
the healthy shape next to it."""

from __future__ import annotations

from collections.abc import Sequence

from spotq.audit import checks
from spotq.audit.checks import Finding, Limits, Severity
from spotq.audit.views import Budget, Cluster, Node, Owner, Pod, Ref, SpotqDeployment, Workload

SPOT_A = Node("spot-a", {"eks.amazonaws.com/capacityType": "SPOT", "eks.amazonaws.com/nodegroup": "g1",
                         "topology.kubernetes.io/zone": "z1"})  # fmt: skip
SPOT_B = Node("spot-b", {"karpenter.sh/capacity-type": "spot", "karpenter.sh/nodepool": "p2",
                         "topology.kubernetes.io/zone": "z2"})  # fmt: skip
SPOT_A2 = Node("spot-a2", {"lifecycle": "Ec2Spot", "eks.amazonaws.com/nodegroup": "g1",
                           "topology.kubernetes.io/zone": "z2"})  # fmt: skip
ON_DEMAND = Node("od", {"eks.amazonaws.com/capacityType": "ON_DEMAND", "topology.kubernetes.io/zone": "z1"})
NODES = (SPOT_A, SPOT_B, SPOT_A2, ON_DEMAND)


WEB_RS = Owner("ReplicaSet", "web-1")


def pod(name: str, node: Node, *, owner: Owner | None = WEB_RS, app: str = "web", **fields: object) -> Pod:
    return Pod("ns", name, node_name=node.name, labels={"app": app}, controller=owner, **fields)  # type: ignore[arg-type]


def deployment(replicas: int, *nodes: Node, name: str = "web", **pod_fields: object) -> tuple[Workload, list[Pod]]:
    pods = [pod(f"{name}-{i}", node, app=name, **pod_fields) for i, node in enumerate(nodes)]  # type: ignore[arg-type]
    return Workload("Deployment", "ns", name, replicas, tuple(pods)), pods


def budget(name: str = "web", app: str = "web", **fields: object) -> Budget:
    defaults: dict[str, object] = {"max_unavailable": 1, "disruptions_allowed": 1, "current_healthy": 2,
                                   "expected_pods": 2}  # fmt: skip
    return Budget("ns", name, {"matchLabels": {"app": app}}, **{**defaults, **fields})  # type: ignore[arg-type]


def cluster(workload: tuple[Workload, list[Pod]] | None = None, *, pods: Sequence[Pod] = (),
            budgets: Sequence[Budget] = (budget(),), **fields: object) -> Cluster:  # fmt: skip
    workloads = (workload[0],) if workload else ()
    all_pods = tuple(workload[1] if workload else ()) + tuple(pods)
    return Cluster(nodes=NODES, pods=all_pods, workloads=workloads, budgets=tuple(budgets), **fields)  # type: ignore[arg-type]


def ids(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.check, f.kind, f.name) for f in findings]


# -- single-replica, spot-single-pool, spot-single-zone ---------------------------------------------------------


def test_one_replica_on_a_spot_node_is_at_risk() -> None:
    found = checks.single_replica(cluster(deployment(1, SPOT_A)), Limits())
    assert ids(found) == [("single-replica", "Deployment", "web")]
    assert found[0].severity is Severity.HIGH and "spot-a" in found[0].detail


def test_one_replica_off_spot_or_two_replicas_is_not_a_single_replica_finding() -> None:
    assert checks.single_replica(cluster(deployment(1, ON_DEMAND)), Limits()) == []
    assert checks.single_replica(cluster(deployment(2, SPOT_A, SPOT_B)), Limits()) == []


def test_replicas_all_in_one_spot_pool_are_at_risk_even_across_zones() -> None:
    found = checks.spot_single_pool(cluster(deployment(2, SPOT_A, SPOT_A2)), Limits())  # g1 in z1 and z2
    assert ids(found) == [("spot-single-pool", "Deployment", "web")]
    assert "pool g1" in found[0].detail
    assert checks.spot_single_zone(cluster(deployment(2, SPOT_A, SPOT_A2)), Limits()) == []


def test_replicas_all_in_one_spot_zone_are_at_risk_even_across_pools() -> None:
    found = checks.spot_single_zone(cluster(deployment(2, SPOT_B, SPOT_A2)), Limits())  # p2 and g1, both z2
    assert ids(found) == [("spot-single-zone", "Deployment", "web")]
    assert "zone z2" in found[0].detail
    assert checks.spot_single_pool(cluster(deployment(2, SPOT_B, SPOT_A2)), Limits()) == []


def test_replicas_spread_or_partly_on_demand_are_not_concentrated() -> None:
    for spread in (deployment(2, SPOT_A, SPOT_B), deployment(2, SPOT_A, ON_DEMAND)):
        assert checks.spot_single_pool(cluster(spread), Limits()) == []
        assert checks.spot_single_zone(cluster(spread), Limits()) == []


def test_a_single_replica_is_not_also_reported_as_concentrated() -> None:
    assert checks.spot_single_pool(cluster(deployment(1, SPOT_A)), Limits()) == []


# -- PodDisruptionBudgets ---------------------------------------------------------------------------------------


def test_no_budget_selecting_the_pods_is_reported() -> None:
    other = budget("other", app="other")
    found = checks.missing_budget(cluster(deployment(2, SPOT_A, SPOT_B), budgets=[other]), Limits())
    assert ids(found) == [("no-pdb", "Deployment", "web")]
    assert checks.missing_budget(cluster(deployment(2, SPOT_A, SPOT_B)), Limits()) == []


def test_a_budget_in_another_namespace_does_not_cover() -> None:
    elsewhere = Budget("other-ns", "web", {"matchLabels": {"app": "web"}}, max_unavailable=1)
    assert ids(checks.missing_budget(cluster(deployment(2, SPOT_A, SPOT_B), budgets=[elsewhere]), Limits())) == [
        ("no-pdb", "Deployment", "web")
    ]


def test_budget_selectors_by_labels_and_by_expressions() -> None:
    web = deployment(2, SPOT_A, SPOT_B)
    by_expression = Budget("ns", "expr", {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]})
    assert checks.missing_budget(cluster(web, budgets=[by_expression]), Limits()) == []
    needs_two_labels = Budget("ns", "two", {"matchLabels": {"app": "web", "tier": "front"}})
    selects_nothing = Budget("ns", "none", None)
    for pdb in (needs_two_labels, selects_nothing):
        assert ids(checks.missing_budget(cluster(web, budgets=[pdb]), Limits())) == [("no-pdb", "Deployment", "web")]


def test_workloads_without_pods_on_spot_are_not_audited() -> None:
    assert checks.missing_budget(cluster(deployment(2, ON_DEMAND, ON_DEMAND), budgets=[]), Limits()) == []


def test_budgets_that_allow_no_eviction_are_reported_with_the_reason() -> None:
    blocking = {
        "maxUnavailable 0": budget(max_unavailable=0),
        "maxUnavailable 0%": budget(max_unavailable="0%"),
        "minAvailable 2 with 2 replicas": budget(max_unavailable=None, min_available=2),
        "minAvailable 100% with 2 replicas": budget(max_unavailable=None, min_available="100%"),
        "minAvailable 60% with 2 replicas": budget(max_unavailable=None, min_available="60%"),  # rounds up to 2
        "disruptionsAllowed 0 with all 2 pods healthy": budget(disruptions_allowed=0),
    }
    for reason, pdb in blocking.items():
        found = checks.blocking_budget(cluster(deployment(2, SPOT_A, SPOT_B), budgets=[pdb]), Limits())
        assert ids(found) == [("pdb-blocks-eviction", "Deployment", "web")], reason
        assert f"({reason})" in found[0].detail


def test_a_blocking_budget_is_a_warning_when_spotq_force_deletes_before_the_deadline() -> None:
    state = cluster(deployment(2, SPOT_A, SPOT_B), budgets=[budget(max_unavailable=0)])
    assert checks.blocking_budget(state, Limits())[0].severity is Severity.HIGH
    forced = checks.blocking_budget(state, Limits(force_delete_seconds=20))
    assert forced[0].severity is Severity.WARNING
    assert "deletes its pods on an interrupted node 20 s before the deadline" in forced[0].detail


def test_budgets_that_allow_an_eviction_are_not_reported() -> None:
    fine = [
        budget(),
        budget(max_unavailable="10%"),  # rounds up to 1
        budget(max_unavailable=None, min_available=1),
        budget(max_unavailable=None, min_available="50%"),
        budget(disruptions_allowed=0, current_healthy=1),  # 0 because a pod is down now, not by design
        budget(disruptions_allowed=None),  # not observed yet
    ]
    for pdb in fine:
        assert checks.blocking_budget(cluster(deployment(2, SPOT_A, SPOT_B), budgets=[pdb]), Limits()) == [], pdb


def test_a_pod_under_two_budgets_is_reported() -> None:
    everything = Budget("ns", "all", {}, max_unavailable=1, disruptions_allowed=1)  # empty selector: every pod
    found = checks.overlapping_budgets(cluster(deployment(2, SPOT_A, SPOT_B), budgets=[budget(), everything]),
                                       Limits())  # fmt: skip
    assert ids(found) == [("pdb-overlap", "Deployment", "web")]
    assert "(all, web)" in found[0].detail
    assert checks.overlapping_budgets(cluster(deployment(2, SPOT_A, SPOT_B)), Limits()) == []


# -- grace, local storage, bare pods ----------------------------------------------------------------------------


def test_grace_longer_than_the_window_left_by_the_safety_margin() -> None:
    limits = Limits(safety_margin_seconds=30)  # 120 - 30 = 90 s
    found = checks.grace_too_long(cluster(deployment(2, SPOT_A, SPOT_B, grace_seconds=91)), limits)
    assert ids(found) == [("grace-too-long", "Deployment", "web")]
    assert "91 > the 90 s" in found[0].detail
    assert checks.grace_too_long(cluster(deployment(2, SPOT_A, SPOT_B, grace_seconds=90)), limits) == []
    assert checks.grace_too_long(cluster(deployment(2, ON_DEMAND, ON_DEMAND, grace_seconds=600)), limits) == []


def test_grace_of_a_job_pod_names_the_job() -> None:
    job_pod = pod("batch-x", SPOT_A, owner=Owner("Job", "batch"), grace_seconds=300)
    assert ids(checks.grace_too_long(cluster(pods=[job_pod]), Limits())) == [("grace-too-long", "Job", "batch")]


def test_local_volumes_on_spot_nodes() -> None:
    volumes = ("emptyDir cache", "hostPath logs")
    found = checks.local_storage(cluster(deployment(2, SPOT_A, SPOT_B, local_volumes=volumes)), Limits())
    assert ids(found) == [("local-storage", "Deployment", "web")]
    assert "emptyDir cache, hostPath logs" in found[0].detail and "does not evict" not in found[0].detail
    kept = checks.local_storage(
        cluster(deployment(2, SPOT_A, SPOT_B, local_volumes=volumes)), Limits(delete_emptydir_data=False)
    )
    assert "SPOTQ_DRAIN__DELETE_EMPTYDIR_DATA=false" in kept[0].detail
    assert checks.local_storage(cluster(deployment(2, SPOT_A, SPOT_B)), Limits()) == []
    assert checks.local_storage(cluster(deployment(2, ON_DEMAND, ON_DEMAND, local_volumes=volumes)), Limits()) == []


def test_daemonset_static_finished_and_terminating_pods_are_not_audited() -> None:
    ignored = [
        pod("agent", SPOT_A, owner=Owner("DaemonSet", "agent"), local_volumes=("hostPath logs",), grace_seconds=999),
        pod("static", SPOT_A, owner=Owner("Node", "spot-a"), mirror=True, local_volumes=("hostPath etc",)),
        pod("done", SPOT_A, owner=None, phase="Succeeded"),
        pod("leaving", SPOT_A, owner=None, terminating=True),
    ]
    for check in (checks.local_storage, checks.grace_too_long, checks.bare_pods):
        assert check(cluster(pods=ignored), Limits()) == [], check.__name__


def test_a_bare_pod_on_a_spot_node() -> None:
    bare = pod("debug", SPOT_A, owner=None)
    found = checks.bare_pods(cluster(pods=[bare]), Limits())
    assert ids(found) == [("bare-pod", "Pod", "debug")] and found[0].severity is Severity.HIGH
    assert (
        "EVICT_UNMANAGED_PODS" in checks.bare_pods(cluster(pods=[bare]), Limits(evict_unmanaged_pods=False))[0].detail
    )
    assert checks.bare_pods(cluster(pods=[pod("debug", ON_DEMAND, owner=None)]), Limits()) == []
    assert checks.bare_pods(cluster(pods=[pod("managed", SPOT_A)]), Limits()) == []


# -- spotq itself -----------------------------------------------------------------------------------------------

IMDS = Ref("spotq", "spotq")


def imds_pod(node: Node, *, ready: bool = True) -> Pod:
    return Pod("spotq", f"spotq-{node.name}", node_name=node.name, controller=Owner("DaemonSet", "spotq"), ready=ready)


def test_spot_nodes_without_a_ready_imds_pod() -> None:
    state = cluster(imds_daemonsets=(IMDS,), imds_pods=(imds_pod(SPOT_A), imds_pod(SPOT_B, ready=False)))
    found = checks.imds_coverage(state, Limits())
    assert ids(found) == [("imds-pod-missing", "Node", "spot-b"), ("imds-pod-missing", "Node", "spot-a2")]
    assert "not ready" in found[0].detail and "no pod of spotq's IMDS DaemonSet (spotq/spotq)" in found[1].detail


def test_imds_coverage_is_quiet_when_every_spot_node_has_one_or_no_daemonset_exists() -> None:
    everywhere = tuple(imds_pod(node) for node in (SPOT_A, SPOT_B, SPOT_A2))
    assert checks.imds_coverage(cluster(imds_daemonsets=(IMDS,), imds_pods=everywhere), Limits()) == []
    assert checks.imds_coverage(cluster(), Limits()) == []
    other_ds = tuple(
        Pod("x", p.name, node_name=p.node_name, controller=Owner("DaemonSet", "spotq")) for p in everywhere
    )
    assert len(checks.imds_coverage(cluster(imds_daemonsets=(IMDS,), imds_pods=other_ds), Limits())) == 3


def test_queue_consumer_checked_only_with_a_queue_configured() -> None:
    down = SpotqDeployment("spotq", "spotq", replicas=2, ready_replicas=0)
    up = SpotqDeployment("spotq", "spotq", replicas=2, ready_replicas=1)
    queue = Limits(queue_configured=True)
    assert ids(checks.queue_consumer(cluster(queue_consumers=(down,)), queue)) == [
        ("queue-consumer-down", "Deployment", "spotq")
    ]
    missing = checks.queue_consumer(cluster(), queue)
    assert [(f.check, f.name) for f in missing] == [("queue-consumer-down", "")]
    assert checks.queue_consumer(cluster(queue_consumers=(up,)), queue) == []
    assert checks.queue_consumer(cluster(queue_consumers=(down,)), Limits()) == []


def test_spot_nodes_and_no_spotq_at_all() -> None:
    assert ids(checks.no_handler(cluster(), Limits())) == [("no-handler", "Cluster", "")]
    assert checks.no_handler(cluster(imds_daemonsets=(IMDS,)), Limits()) == []
    consumer = SpotqDeployment("spotq", "spotq", replicas=1, ready_replicas=1)
    assert checks.no_handler(cluster(queue_consumers=(consumer,)), Limits()) == []
    assert checks.no_handler(Cluster(nodes=(ON_DEMAND,)), Limits()) == []


# -- all together -----------------------------------------------------------------------------------------------


def test_run_orders_findings_most_severe_first_and_stably() -> None:
    state = cluster(deployment(1, SPOT_A, grace_seconds=300), budgets=[], pods=[pod("debug", SPOT_B, owner=None)],
                    imds_daemonsets=(IMDS,), imds_pods=tuple(imds_pod(n) for n in (SPOT_A, SPOT_B, SPOT_A2)))  # fmt: skip
    found = checks.run(state, Limits())
    assert [(f.severity.value, f.check) for f in found] == [
        ("high", "bare-pod"),
        ("high", "single-replica"),
        ("warning", "grace-too-long"),
        ("warning", "no-pdb"),
    ]
    assert found == checks.run(state, Limits(), checks=tuple(reversed(checks.CHECKS)))
