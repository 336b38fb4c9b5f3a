"""marks.patch_node: a concurrent writer's change (409 Conflict) is read back and the patch recomputed, a few times."""

from __future__ import annotations

from typing import Any

import pytest

from spotq.errors import ApiError, TransientError
from spotq.kube.marks import CONFLICT_RETRIES, Marks, apply
from tests.unit.fake_transport import FakeTransport

JSON = dict[str, Any]
MARKS = Marks(taints=(("spotq.io/spot-interruption", "e1", "NoSchedule"),), cordon=True)


def node(version: str, taints: list[JSON] | None = None) -> JSON:
    return {"metadata": {"name": "n1", "resourceVersion": version}, "spec": {"taints": taints or []}}


def conflict() -> ApiError:
    return ApiError(409, "Conflict", "the object has been modified; please apply your changes to the latest version")


async def test_a_conflict_reads_the_node_again_and_keeps_the_other_writers_taint() -> None:
    theirs = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}
    transport = FakeTransport(answers={"patch_node": [conflict(), {}], "get_node": [node("8", [theirs])]})
    assert await apply(transport, "n1", MARKS, cached=node("7"))
    patches = [call.body for call in transport.calls if call.operation == "patch_node"]
    assert transport.operations() == ["patch_node", "get_node", "patch_node"]
    assert patches[0] is not None and patches[0]["metadata"]["resourceVersion"] == "7"
    assert patches[1] is not None and patches[1]["metadata"]["resourceVersion"] == "8"
    assert patches[1]["spec"]["taints"][0] == theirs and len(patches[1]["spec"]["taints"]) == 2


async def test_a_node_that_got_the_marks_meanwhile_needs_no_second_patch() -> None:
    marked = node("8", [{"key": "spotq.io/spot-interruption", "value": "e0", "effect": "NoSchedule"}])
    marked["spec"]["unschedulable"] = True
    transport = FakeTransport(answers={"patch_node": [conflict()], "get_node": [marked]})
    assert not await apply(transport, "n1", MARKS, cached=node("7"))
    assert transport.operations() == ["patch_node", "get_node"]


async def test_endless_conflicts_end_in_a_transient_error() -> None:
    transport = FakeTransport(
        answers={
            "patch_node": [conflict() for _ in range(CONFLICT_RETRIES)],
            "get_node": [node(str(v)) for v in range(CONFLICT_RETRIES)],
        }
    )
    with pytest.raises(TransientError, match="still conflicting"):
        await apply(transport, "n1", MARKS, cached=node("7"))
    assert transport.operations().count("patch_node") == CONFLICT_RETRIES
