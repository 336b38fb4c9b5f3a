"""The benchmark's audit-log reading of node marks: when a contender's write that tainted and cordoned a node
returned, whichever shape the write had (merge patch, strategic merge patch, update, JSON patch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.audit import AuditLog, node_marks_in

USER = "system:serviceaccount:spotq-system:spotq"
TAINT = "spotq.io/interruption"


def _event(name: str, verb: str, body: Any, done: str, *, code: int = 200, user: str = USER) -> dict[str, Any]:
    return {
        "auditID": f"{name}-{verb}-{done}-{code}",
        "stage": "ResponseComplete",
        "verb": verb,
        "user": {"username": user},
        "objectRef": {"resource": "nodes", "name": name},
        "responseStatus": {"code": code},
        "requestObject": body,
        "requestReceivedTimestamp": done,
        "stageTimestamp": done,
    }


def _log(tmp_path: Path, events: list[dict[str, Any]]) -> AuditLog:
    path = tmp_path / "audit.log"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return AuditLog(path)


def test_a_merge_patch_with_taint_and_cordon_marks_the_node_when_it_returned(tmp_path: Path) -> None:
    body = {"metadata": {"resourceVersion": "7"}, "spec": {"unschedulable": True, "taints": [{"key": TAINT}]}}
    log = _log(tmp_path, [_event("a", "patch", body, "2026-12-03T10:00:01.500000Z")])
    requests = log.since_mark([USER])[USER]
    assert requests.marked_at(TAINT) == {"a": 1796292001.5}


def test_a_cordon_and_a_later_taint_mark_the_node_at_the_later_write(tmp_path: Path) -> None:
    log = _log(
        tmp_path,
        [
            _event("b", "patch", {"spec": {"unschedulable": True}}, "2026-12-03T10:00:01Z"),
            _event("b", "update", {"spec": {"taints": [{"key": "other"}]}}, "2026-12-03T10:00:02Z"),
            _event(
                "b", "update", {"spec": {"unschedulable": True, "taints": [{"key": TAINT}]}}, "2026-12-03T10:00:03Z"
            ),
        ],
    )
    requests = log.since_mark([USER])[USER]
    assert requests.marked_at(TAINT) == {"b": 1796292003.0}
    assert requests.marked_at(None) == {"b": 1796292001.0}  # cordon only (kubectl drain)


def test_refused_writes_other_users_and_unmarking_writes_mark_nothing(tmp_path: Path) -> None:
    marks = {"spec": {"unschedulable": True, "taints": [{"key": TAINT}]}}
    log = _log(
        tmp_path,
        [
            _event("c", "patch", marks, "2026-12-03T10:00:01Z", code=409),
            _event("c", "patch", marks, "2026-12-03T10:00:01Z", user="someone-else"),
            _event("c", "patch", {"spec": {"unschedulable": None, "taints": []}}, "2026-12-03T10:00:02Z"),
            _event("c", "patch", {"metadata": {"annotations": {"x": "y"}}}, "2026-12-03T10:00:02Z"),
        ],
    )
    assert log.since_mark([USER])[USER].marked_at(TAINT) == {}


def test_json_patch_operations_are_read_for_cordon_and_taints() -> None:
    assert node_marks_in([{"op": "replace", "path": "/spec/unschedulable", "value": True}]) == (True, set())
    assert node_marks_in([{"op": "add", "path": "/spec/taints/-", "value": {"key": TAINT}}]) == (False, {TAINT})
    assert node_marks_in([{"op": "add", "path": "/spec/taints", "value": [{"key": TAINT}]}]) == (False, {TAINT})
    assert node_marks_in([{"op": "remove", "path": "/spec/unschedulable"}]) == (False, set())
    assert node_marks_in(None) == (False, set())
