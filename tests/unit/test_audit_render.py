"""`spotq audit`'s output: JSON with stable field names for CI, an aligned table for people."""

from __future__ import annotations

import json

from spotq.audit import render
from spotq.audit.checks import Finding, Severity

FINDINGS = [
    Finding("bare-pod", Severity.HIGH, "Pod", "shop", "debug", "no controller"),
    Finding("imds-pod-missing", Severity.HIGH, "Node", "", "ip-10-0-0-4.ec2.internal", "no pod"),
    Finding("no-pdb", Severity.WARNING, "Deployment", "shop", "cart", "no PodDisruptionBudget"),
]


def test_json_document_and_its_field_names() -> None:
    document = json.loads(render.as_json(FINDINGS, spot_nodes=4))
    assert document["at_risk"] is True and document["spot_nodes"] == 4
    assert document["findings"][0] == {
        "check": "bare-pod",
        "severity": "high",
        "kind": "Pod",
        "namespace": "shop",
        "name": "debug",
        "detail": "no controller",
    }
    assert [f["check"] for f in document["findings"]] == ["bare-pod", "imds-pod-missing", "no-pdb"]
    assert json.loads(render.as_json([], spot_nodes=0)) == {"at_risk": False, "spot_nodes": 0, "findings": []}


def test_table_columns_line_up_and_a_summary_closes_it() -> None:
    lines = render.as_table(FINDINGS, spot_nodes=4).splitlines()
    assert lines[0].split() == ["SEVERITY", "CHECK", "NAMESPACE", "NAME", "DETAIL"]
    assert lines[2].split()[:4] == ["high", "imds-pod-missing", "-", "Node/ip-10-0-0-4.ec2.internal"]
    detail_column = lines[0].index("DETAIL")
    assert all(line[detail_column:].startswith(f.detail) for line, f in zip(lines[1:4], FINDINGS, strict=True))
    assert lines[-1] == "3 findings (2 high, 1 warning) on 4 Spot nodes."
    assert render.as_table([], spot_nodes=1) == "Nothing at risk on 1 Spot node."
