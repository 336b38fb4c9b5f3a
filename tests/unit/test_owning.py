"""Which replica drains a node: the pure decisions (owning.py) and the exclusive claim PATCH (kube/marks.py)."""

from __future__ import annotations

import os
from typing import Any

from spotq import owning
from spotq.errors import ApiError
from spotq.kube.marks import NodeMarker, claim_patch, drain_record_after, marks_for, patch_for
from spotq.kube.nodes import node_ref
from spotq.owning import Step
from spotq.ports import DrainRecord, NodeMarks
from spotq.selectors import parse
from tests.unit.fake_transport import FakeTransport

JSON = dict[str, Any]


def alive(*holders: str) -> Any:
    return lambda holder: holder in holders


def test_a_started_drain_of_this_replica_is_run_here() -> None:
    assert owning.step(DrainRecord("a", "started"), "a", alive()) is Step.DRAIN


def test_a_started_drain_of_a_live_replica_is_waited_for() -> None:
    assert owning.step(DrainRecord("b", "started"), "a", alive("b")) is Step.WAIT


def test_a_started_drain_of_a_gone_replica_or_of_nobody_is_claimed() -> None:
    assert owning.step(DrainRecord("b", "started"), "a", alive()) is Step.CLAIM
    assert owning.step(DrainRecord(None, "started"), "a", alive()) is Step.CLAIM


def test_a_node_never_drained_or_whose_drain_timed_out_is_claimed_for_a_new_drain() -> None:
    assert owning.step(DrainRecord(), "a", alive()) is Step.CLAIM
    assert owning.step(DrainRecord("b", "timed-out"), "a", alive("b")) is Step.CLAIM


def test_a_finished_drain_is_over_and_so_is_any_end_of_the_drain_waited_for() -> None:
    assert owning.step(DrainRecord("b", "finished"), "a", alive("b")) is Step.ENDED
    for state in ("timed-out", "blocked", None):
        assert owning.step(DrainRecord("b", state), "a", alive("b"), waiting=True) is Step.ENDED


def test_while_waiting_a_lagging_index_is_no_news_but_the_end_or_another_drainer_is() -> None:
    assert not owning.news(DrainRecord(None, None), "b")  # the index has not seen b's claim yet
    assert not owning.news(DrainRecord("b", "started"), "b")
    assert owning.news(DrainRecord("b", "finished"), "b")
    assert owning.news(DrainRecord(None, "finished"), "b")  # released meanwhile, then recorded
    assert owning.news(DrainRecord("c", "started"), "b")  # c took it over


def test_a_lease_not_known_to_expire_is_live() -> None:
    assert owning.live(None, 5.0) and owning.live(6.0, 5.0) and not owning.live(5.0, 5.0)


# -- the claim on the node -------------------------------------------------------------------------------------


def node(version: str, annotations: dict[str, str] | None = None) -> JSON:
    return {"metadata": {"name": "n1", "resourceVersion": version, "annotations": annotations or {}}, "spec": {}}


def test_the_mark_that_starts_a_drain_claims_it_in_the_same_patch() -> None:
    marks = marks_for(NodeMarks(cordon=True, drain_started=True, drainer="a"), "spotq.io")
    patch = patch_for(node("7"), marks)
    assert patch is not None and patch["metadata"]["resourceVersion"] == "7"
    written = patch["metadata"]["annotations"]
    assert (written["spotq.io/drain"], written["spotq.io/drainer"]) == ("started", "a")
    assert drain_record_after(node("7"), patch, "spotq.io") == DrainRecord("a", "started")


def test_a_mark_on_a_node_another_replica_drains_leaves_its_claim() -> None:
    theirs = {"spotq.io/drain": "started", "spotq.io/drainer": "b"}
    marks = marks_for(NodeMarks(cordon=True, drain_started=True, drainer="a"), "spotq.io")
    patch = patch_for(node("7", theirs), marks)
    assert patch is not None and set(patch["metadata"]["annotations"]) == {"spotq.io/owned"}  # the cordon only
    assert drain_record_after(node("7", theirs), patch, "spotq.io") == DrainRecord("b", "started")


def test_a_claim_carries_the_resource_version_it_was_decided_on() -> None:
    gone = node("9", {"spotq.io/drain": "started", "spotq.io/drainer": "b"})
    patch = claim_patch(gone, "spotq.io", "a", lambda record: record.drainer == "b")
    assert patch == {
        "metadata": {"resourceVersion": "9", "annotations": {"spotq.io/drainer": "a", "spotq.io/drain": "started"}}
    }
    assert claim_patch(gone, "spotq.io", "a", lambda record: False) is None


async def test_of_two_replicas_claiming_at_once_the_second_reads_the_winner_and_writes_nothing() -> None:
    """b claimed first: a's PATCH (from the version both saw) is a 409; a reads the node, sees b's live claim, and
    leaves it."""
    before = node("7", {"spotq.io/drain": "timed-out", "spotq.io/drainer": "b"})
    won = node("8", {"spotq.io/drain": "started", "spotq.io/drainer": "c"})
    transport = FakeTransport(
        answers={"patch_node": [ApiError(409, "Conflict", "the object has been modified")], "get_node": [won]}
    )
    ref = node_ref({**before, "metadata": {**before["metadata"], "uid": "u"}}, parse(""))

    def may_claim(record: DrainRecord) -> bool:
        return owning.step(record, "a", alive("c")) is Step.CLAIM

    record = await NodeMarker(transport).claim_drain(ref, "a", may_claim)
    assert record == DrainRecord("c", "started")
    assert transport.operations() == ["patch_node", "get_node"]
    first = transport.calls[0].body
    assert first is not None and first["metadata"]["resourceVersion"] == "7"


def test_the_index_reads_the_drainer_from_the_node() -> None:
    ref = node_ref(node("3", {"spotq.io/drain": "started", "spotq.io/drainer": "spotq-7d9f-x"}), parse(""))
    assert DrainRecord.of(ref) == DrainRecord("spotq-7d9f-x", "started")


def test_only_queue_mode_in_a_pods_namespace_coordinates_replicas() -> None:
    from spotq import app
    from spotq.settings import Settings

    in_pod = {"pod_name": "spotq-7d9f-x", "pod_namespace": "kube-system"}
    assert app.replica_identity(Settings(kube=in_pod), "queue") == "spotq-7d9f-x"  # type: ignore[arg-type]
    assert app.replica_identity(Settings(kube=in_pod), "imds") is None  # type: ignore[arg-type]
    assert app.replica_identity(Settings(), "queue") is None  # make demo: no namespace, one replica as before
    off = {**in_pod, "replica_lease_seconds": 0}
    assert app.replica_identity(Settings(kube=off), "queue") is None  # type: ignore[arg-type]
    dry = Settings(kube=in_pod, policy={"dry_run": True})  # type: ignore[arg-type]
    assert app.replica_identity(dry, "queue") is None
    unnamed = app.replica_identity(Settings(kube={"pod_namespace": "ns"}), "queue")  # type: ignore[arg-type]
    assert unnamed is not None and unnamed.endswith(f"-{os.getpid()}")
