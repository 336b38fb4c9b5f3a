"""The node patch: complete, minimal, and absent when the node already carries the marks."""

from __future__ import annotations

from typing import Any

from spotq.kube.marks import Marks, patch_for

LB = "node.kubernetes.io/exclude-from-external-load-balancers"
MARKS = Marks(
    taints=(("spotq.io/spot-interruption", "e1", "NoSchedule"),),
    cordon=True,
    labels={LB: "true"},
    annotations={"spotq.io/spot-interruption": "{}"},
)


def node(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "n1", "resourceVersion": "42", "labels": {}, "annotations": {}}, "spec": spec}


def test_patch_adds_taint_cordon_label_annotation_with_precondition() -> None:
    other = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}
    patch = patch_for(node(taints=[other]), MARKS)
    assert patch is not None
    assert patch["metadata"]["resourceVersion"] == "42"
    assert patch["spec"]["unschedulable"] is True
    assert patch["spec"]["taints"] == [
        other,
        {"key": "spotq.io/spot-interruption", "value": "e1", "effect": "NoSchedule"},
    ]
    assert patch["metadata"]["labels"] == {LB: "true"}
    assert patch["metadata"]["annotations"] == {"spotq.io/spot-interruption": "{}"}


def test_already_marked_node_needs_no_patch() -> None:
    marked = node(
        taints=[{"key": "spotq.io/spot-interruption", "value": "older", "effect": "NoSchedule"}], unschedulable=True
    )
    marked["metadata"]["labels"] = {LB: "true"}
    marked["metadata"]["annotations"] = {"spotq.io/spot-interruption": '{"id": "first"}'}
    assert patch_for(marked, MARKS) is None


def test_first_notice_stays_on_record_but_overwrites_update() -> None:
    marked = node(unschedulable=True)
    marked["metadata"]["annotations"] = {"spotq.io/drain": "started", "spotq.io/spot-interruption": "first"}
    patch = patch_for(
        marked,
        Marks(
            annotations={"spotq.io/spot-interruption": "second"}, overwrite_annotations={"spotq.io/drain": "finished"}
        ),
    )
    assert patch is not None
    assert patch["metadata"]["annotations"] == {"spotq.io/drain": "finished"}
    assert "spec" not in patch


def test_marks_record_what_spotq_itself_changed() -> None:
    marks = Marks(cordon=True, labels={LB: "true"}, owner_key="spotq.io/owned")
    patch = patch_for(node(), marks)
    assert patch is not None and patch["metadata"]["annotations"]["spotq.io/owned"] == f"cordon,label:{LB}"
    already = node(unschedulable=True)  # an operator cordoned it first
    patch = patch_for(already, marks)
    assert patch is not None and patch["metadata"]["annotations"]["spotq.io/owned"] == f"label:{LB}"


def test_release_undoes_only_what_spotq_set() -> None:
    from spotq.kube.marks import release_patch

    marked = node(
        unschedulable=True,
        taints=[
            {"key": "dedicated", "value": "x", "effect": "NoSchedule"},
            {"key": "spotq.io/rebalance-recommendation", "value": "e", "effect": "PreferNoSchedule"},
        ],
    )
    marked["metadata"]["labels"] = {LB: "true", "team": "a"}
    marked["metadata"]["annotations"] = {
        "spotq.io/owned": f"cordon,label:{LB}",
        "spotq.io/drain": "finished",
        "other": "1",
    }
    patch = release_patch(marked, "spotq.io")
    assert patch == {
        "metadata": {
            "resourceVersion": "42",
            "labels": {LB: None},
            "annotations": {"spotq.io/owned": None, "spotq.io/drain": None},
        },
        "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}], "unschedulable": None},
    }
    operator_cordon = node(unschedulable=True, taints=[{"key": "spotq.io/spot-interruption", "effect": "NoSchedule"}])
    patch = release_patch(operator_cordon, "spotq.io")
    assert patch is not None and "unschedulable" not in patch["spec"]
    assert release_patch(node(), "spotq.io") is None


def test_the_drain_state_is_written_without_a_resource_version_so_it_cannot_conflict() -> None:
    node = {
        "metadata": {"name": "n1", "resourceVersion": "7", "annotations": {"spotq.io/drain": "started"}},
        "spec": {},
    }
    patch = patch_for(node, Marks(overwrite_annotations={"spotq.io/drain": "finished"}))
    assert patch == {"metadata": {"annotations": {"spotq.io/drain": "finished"}}}


def test_a_guarded_release_decides_on_the_records_of_the_node_as_read() -> None:
    from spotq.kube.marks import release_patch_if

    marked = node(taints=[{"key": "spotq.io/spot-interruption", "value": "e1", "effect": "NoSchedule"}])
    marked["metadata"]["annotations"] = {
        "spotq.io/spot-interruption": '{"id": "e1", "noticed_at": null, "deadline": null, "detail": "stop"}',
        "spotq.io/drain": "finished",
    }
    seen: list[tuple[str | None, ...]] = []

    def yes(on_record: tuple[Any, ...]) -> bool:
        seen.append(tuple(r.detail for r in on_record))
        return True

    patch = release_patch_if(marked, "spotq.io", yes)
    assert seen == [("stop",)]
    assert patch is not None and patch["metadata"]["resourceVersion"] == "42" and patch["spec"]["taints"] == []
    assert release_patch_if(marked, "spotq.io", lambda _: False) is None
    # A spotq annotation that is no readable record may be a notice: every mark stays.
    marked["metadata"]["annotations"]["spotq.io/lifecycle-terminate"] = "not json"
    assert release_patch_if(marked, "spotq.io", yes) is None
