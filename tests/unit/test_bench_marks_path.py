"""bench/marks_path.py: each node's steps from spotq's log and the audit log (only spotq's first node PATCH, not
another client's nor a status write), and the most PATCHes the API server held at once."""

from __future__ import annotations

import json
from pathlib import Path

from bench import marks_path


def stamp(seconds: float) -> str:
    return f"2026-12-06T00:00:{seconds:09.6f}Z"


def audit(user: str, node: str, at: float, answered: float, subresource: str | None = None) -> str:
    ref = {"resource": "nodes", "name": node, **({"subresource": subresource} if subresource else {})}
    return json.dumps(
        {
            "stage": "ResponseComplete",
            "verb": "patch",
            "user": {"username": user},
            "objectRef": ref,
            "requestReceivedTimestamp": stamp(at),
            "stageTimestamp": stamp(answered),
        }
    )


def test_steps_per_node_from_spotqs_log_and_its_own_writes_in_the_audit_log(tmp_path: Path) -> None:
    spotq = "system:serviceaccount:spotq-system:spotq"
    log = [
        {"time": stamp(10.0), "event": "notice received", "notice_id": "n1"},
        {"time": stamp(10.1), "event": "notice received", "notice_id": "n2"},
        {"time": stamp(10.5), "event": "node marked", "notice_id": "n1", "node": "a"},
        {"time": stamp(10.6), "event": "node marked", "notice_id": "n2", "node": "b"},
    ]
    (tmp_path / "spotq-spotq.log").write_text("not json\n" + "\n".join(json.dumps(e) for e in log) + "\n")
    (tmp_path / "audit.log").write_text(
        "\n".join(
            [
                audit("system:serviceaccount:bench:kwok", "a", 10.05, 10.06),  # another client's write
                audit(spotq, "a", 10.2, 10.45, subresource="status"),
                audit(spotq, "a", 10.3, 10.45),
                audit(spotq, "b", 10.35, 10.55),
                audit(spotq, "a", 50.0, 50.1),  # the drain's end on record, later
            ]
        )
    )
    found = sorted(marks_path.marks(tmp_path, "spotq"))
    assert [round(m.at_server - m.received, 3) for m in found] == [0.3, 0.25]
    assert [round(m.answered - m.at_server, 3) for m in found] == [0.15, 0.2]
    lines = marks_path.report(found)
    assert "first PATCH at the API server 0.300 s after the first notice received" in lines[-1]
    assert lines[-1].endswith("at most 2 at the server at once")
