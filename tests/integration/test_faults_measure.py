"""The fault report's counting rules (faults/measure.py, audit.py, observe.py), on made-up observations: no cluster
is needed, so these run with the unit tests. The scenarios themselves are in test_faults_{process,queue,
control_plane}.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from faults import measure, report
from faults.audit import Audit
from faults.measure import Interruption
from faults.observe import BudgetSeen, NodeSeen, ProcessSample, ProcessSampler
from faults.scenarios import control_plane

T0 = 1_800_000_000.0
A = "system:serviceaccount:spotq-system:spotq-0-p1"
B = "system:serviceaccount:spotq-system:spotq-0-p2"


def stamp(offset: float) -> str:
    return datetime.fromtimestamp(T0 + offset, UTC).isoformat().replace("+00:00", "Z")


def event(user: str, verb: str, uri: str, resource: str, at: float, *, done: float | None = None, code: int = 200,
          name: str = "", subresource: str = "") -> dict[str, object]:  # fmt: skip
    ref = {"resource": resource, "namespace": "wave", "name": name} | (
        {"subresource": subresource} if subresource else {}
    )
    return {
        "auditID": f"{user}-{verb}-{uri}-{at}",
        "user": {"username": user},
        "verb": verb,
        "requestURI": uri,
        "objectRef": ref,
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": stamp(at),
        "stageTimestamp": stamp(done if done is not None else at + 0.01),
    }


def drain(user: str, node: str, start: float, end: float) -> list[dict[str, object]]:
    """A drain as the audit log shows it: a list of the node's pods, then a watch that ends at `end`."""
    uri = f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
    return [
        event(user, "list", uri, "pods", start),
        event(user, "watch", uri + "&watch=true", "pods", start + 0.1, done=end),
    ]


def evict(user: str, pod: str, at: float, code: int = 201) -> dict[str, object]:
    return event(user, "create", f"/api/v1/namespaces/wave/pods/{pod}/eviction", "pods", at, code=code, name=pod,
                 subresource="eviction")  # fmt: skip


def audit_of(tmp_path: Path, events: list[dict[str, object]]) -> Audit:
    path = tmp_path / "audit.log"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return Audit.read(path)


@dataclass
class FakeSeen:
    nodes: dict[str, NodeSeen]
    budgets: dict[str, BudgetSeen] = field(default_factory=dict)
    gaps: list[tuple[float, float]] = field(default_factory=list)
    polls: list[float] = field(default_factory=list)

    def pods_seen_after(self, node: str, when: float) -> int | None:
        later = next((p for p in self.polls if p >= when), None)
        return None if later is None else self.nodes[node].pods_at(later)


def test_evictions_per_pod_and_drains_per_process_come_from_the_audit_log(tmp_path: Path) -> None:
    audit = audit_of(
        tmp_path,
        [*drain(A, "n1", 1, 9), evict(A, "web-1", 2), evict(A, "web-2", 2.1, code=429), evict(A, "web-2", 3),
         evict(B, "web-1", 4)],
    )  # fmt: skip
    assert audit.evicted_twice("wave") == ["wave/web-1"]
    assert [e.user for e in audit.accepted("wave")["wave/web-2"]] == [A]  # the 429 is no eviction
    first, last = audit.drain_spans("n1")[A]
    assert (round(first - T0, 2), round(last - T0, 2)) == (1.0, 9.0)  # the watch's end is the drain's
    assert audit.first_drain_request(B, "n1") is None


def test_two_processes_draining_a_node_at_once_is_a_duplicate_drain_one_after_the_other_is_not(tmp_path: Path) -> None:
    seen = NodeSeen(pods=[(T0, 4)])
    at_once = audit_of(tmp_path, [*drain(A, "n1", 1, 9), *drain(B, "n1", 5, 12)])
    assert "at once" in measure._duplicate_drain("n1", seen, at_once)
    killed_then_resumed = audit_of(tmp_path, [*drain(A, "n1", 1, 5), *drain(B, "n1", 8, 12)])
    assert measure._duplicate_drain("n1", seen, killed_then_resumed) == ""


def test_a_drain_after_the_node_was_on_record_as_finished_is_a_duplicate_drain(tmp_path: Path) -> None:
    seen = NodeSeen(pods=[(T0, 4), (T0 + 6, 0)], drain=[(T0 + 1, "started"), (T0 + 8, "finished")])
    again = audit_of(tmp_path, [*drain(A, "n1", 1, 7.9), *drain(A, "n1", 30, 31)])
    assert "again" in measure._duplicate_drain("n1", seen, again)


def test_an_interruption_is_lost_only_when_its_last_message_goes_while_a_later_poll_still_sees_pods() -> None:
    node = NodeSeen(pods=[(T0, 4), (T0 + 20, 1), (T0 + 30, 0)], marked=T0 + 1)
    seen = FakeSeen({"n1": node}, polls=[T0 + x * 0.5 for x in range(400)])
    item = Interruption("n1", "i-0123456789abcdef0", T0, ["m1", "m2"], {"wave/web-1"})

    def lost(deleted: dict[str, float]) -> int:
        return measure.figure("s", "t", [item], seen, Audit(), deleted, [], ProcessSampler([]), namespace="wave",
                              queue_left=0).lost  # fmt: skip

    assert lost({"m1": T0 + 10}) == 0  # a copy is still in the queue
    assert lost({"m1": T0 + 10, "m2": T0 + 25}) == 1  # the last copy gone while a pod is left
    assert lost({"m1": T0 + 10, "m2": T0 + 31}) == 0  # gone after the node was empty
    assert lost({"m1": T0 + 10, "m2": T0 + 125}) == 0  # gone after the deadline


def test_a_restarted_api_server_counts_the_drains_it_served_before_its_readyz_said_ok(tmp_path: Path) -> None:
    """kill -9 at +12 s, /readyz ok at +16.2 s; the restarted API server answers from +14.96 on (its post-start
    hooks still running), refusing some requests with 403 at first. Seen in CI: every node resumed before /readyz
    said ok, and the report said none ever resumed."""
    user = A
    uri = "/api/v1/pods?fieldSelector=spec.nodeName%3D{}&watch=true"
    audit = audit_of(
        tmp_path,
        [
            event(user, "watch", uri.format("n1"), "pods", 15.84, done=26.4),  # answered before /readyz said ok
            event(user, "watch", uri.format("n2"), "pods", 15.01, done=15.08, code=403),  # refused: not a resume
            event(user, "watch", uri.format("n2"), "pods", 16.35, done=35.4),
            evict(user, "web-1", 15.9),
        ],
    )
    items = [Interruption("n1", "i-1", T0, [], {"wave/web-1"}), Interruption("n2", "i-2", T0, [], {"wave/web-2"})]

    def waits(served_from: float) -> dict[str, float | None]:
        found, _ = control_plane.resume_waits(
            audit, items, {}, user, namespace="wave", fault=T0 + 12, since=T0 + 16.2, served_from=served_from
        )
        return {node: None if w is None else round(w, 2) for node, w in found.items()}

    assert waits(served_from=T0 + 12) == {"n1": -0.36, "n2": 0.15}
    # counted only from /readyz ok (as a pause or a new token is), n1 never resumed: what the report said
    assert waits(served_from=T0 + 16.2) == {"n1": None, "n2": 0.15}


def test_budget_violations_count_episodes_below_desired_healthy() -> None:
    budget = BudgetSeen([(T0, 40, 36), (T0 + 1, 35, 36), (T0 + 2, 34, 36), (T0 + 3, 36, 36), (T0 + 4, 35, 36)])
    assert budget.violations() == 2
    assert budget.worst_margin() == -2


def test_a_node_already_empty_when_interrupted_counts_as_drained_at_once() -> None:
    node = NodeSeen(pods=[(T0, 3), (T0 + 10, 0), (T0 + 50, 2), (T0 + 70, 0)])
    assert node.empty_since(T0 + 20) == T0 + 20
    assert node.empty_since(T0 + 55) == T0 + 70
    assert node.empty_since(T0 + 1) == T0 + 10


def test_rss_growth_compares_the_end_with_the_time_after_warm_up() -> None:
    sampler = ProcessSampler([])
    sampler.samples["p"] = [ProcessSample(T0 + i, 80.0 if i < 20 else 100.0 + (i >= 90) * 5, 200) for i in range(100)]
    growth = measure.rss_growth(sampler, "p")
    assert (growth["baseline_mb"], growth["final_mb"], growth["growth_pct"]) == (100.0, 105.0, 5.0)


def test_the_table_says_why_a_scenario_did_not_run_or_failed() -> None:
    skipped = measure.Figures("replicas-2", "t", skipped="no coordination").as_dict()
    assert report.row(skipped)["verdict"] == "not run: no coordination"
    assert report.row({"scenario": "x", "error": "boom"})["verdict"] == "ERROR: boom"
    missed = measure.Figures("kill-restart", "t", interruptions=1, lost=1, resume_seconds=7.0).as_dict()
    assert report.row(missed)["verdict"] == "missed: 0 lost, resume in time"
