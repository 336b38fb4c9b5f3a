"""The benchmark times a node's marks by the API server's audit log: against a real API server with the bench's
audit policy, the writes that tainted and cordoned a node are recorded with their bodies, and the mark's time is
when the last of them returned, whichever way a contender writes (spotq's one merge patch, kubectl's cordon and
taint patches, an update of the whole node as NTH taints, a JSON patch)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import world
from bench.audit import AuditLog
from testenv import LocalCluster, audit_flags

pytestmark = pytest.mark.integration

ADMIN = "spotq-testenv-admin"  # the test environment's admin certificate's CN
TAINT = "spotq.io/interruption"


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    workdir = tmp_path_factory.mktemp("audited")
    policy = world.audit_policy(workdir / "audit-policy.yaml", users=[ADMIN])
    log = workdir / "audit.log"
    cluster = LocalCluster(
        workdir=workdir / "cluster",
        extra_args={"kube-apiserver": audit_flags(policy, log)},
    )
    cluster.start()
    try:
        yield cluster, log
    finally:
        cluster.stop()


def test_each_way_of_marking_a_node_is_timed_when_its_last_write_returned(audited: tuple[LocalCluster, Path]) -> None:
    cluster, path = audited
    names = [n.node_name for n in cluster.create_spot_nodes(5)]
    merge, kubectl, update, json_patch, cordon_only = names
    audit = AuditLog(path)
    audit.mark()
    taint = {"key": TAINT, "value": "true", "effect": "NoSchedule"}
    before = time.time()
    cluster.kubectl(
        "patch", "node", merge, "--type=merge", "-p", json.dumps({"spec": {"unschedulable": True, "taints": [taint]}})
    )
    cluster.kubectl("cordon", kubectl)
    between = time.time()
    cluster.kubectl("taint", "nodes", kubectl, f"{TAINT}=true:NoSchedule")
    node = cluster.get_node(update)
    assert node is not None
    node["spec"] |= {"unschedulable": True, "taints": [*(node["spec"].get("taints") or []), taint]}
    cluster.kubectl("replace", "-f", "-", input=json.dumps(node))
    ops = [
        {"op": "add", "path": "/spec/unschedulable", "value": True},
        {"op": "add", "path": "/spec/taints", "value": [taint]},
    ]
    cluster.kubectl("patch", "node", json_patch, "--type=json", "-p", json.dumps(ops))
    cluster.kubectl("cordon", cordon_only)
    cluster.kubectl("annotate", "node", cordon_only, "note=not-a-taint")
    after = time.time()
    time.sleep(2.5)  # the batch backend writes within its 1 s wait

    requests = audit.since_mark([ADMIN])[ADMIN]
    marked = requests.marked_at(TAINT)
    assert set(marked) == {merge, kubectl, update, json_patch}
    assert all(before <= t <= after + 0.05 for t in marked.values()), marked
    assert marked[kubectl] >= between  # the taint came second: the node was marked then, not at its cordon
    assert set(requests.marked_at(None)) == set(names)
