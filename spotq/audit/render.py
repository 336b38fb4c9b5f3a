"""Findings as an operator reads them (a table) or as a CI job reads them (JSON with stable field names)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from .checks import Finding

FIELDS = ("check", "severity", "kind", "namespace", "name", "detail")


def as_json(findings: Sequence[Finding], *, spot_nodes: int) -> str:
    """{"at_risk": bool, "spot_nodes": N, "findings": [{check, severity, kind, namespace, name, detail}, ...]}."""
    document = {
        "at_risk": bool(findings),
        "spot_nodes": spot_nodes,
        "findings": [{name: str(getattr(finding, name)) for name in FIELDS} for finding in findings],
    }
    return json.dumps(document, indent=2)


def as_table(findings: Sequence[Finding], *, spot_nodes: int) -> str:
    """Aligned columns SEVERITY CHECK NAMESPACE NAME DETAIL (NAME as KIND/NAME), then a one-line summary."""
    if not findings:
        return f"Nothing at risk on {spot_nodes} Spot node{'s' if spot_nodes != 1 else ''}."
    header = ("SEVERITY", "CHECK", "NAMESPACE", "NAME", "DETAIL")
    rows = [
        (str(f.severity), f.check, f.namespace or "-", f"{f.kind}/{f.name}" if f.name else f.kind, f.detail)
        for f in findings
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in (header, *rows)]  # fmt: skip
    counts = Counter(str(f.severity) for f in findings)
    summary = ", ".join(f"{counts[s]} {s}" for s in ("high", "warning") if counts[s])
    lines.append("")
    lines.append(
        f"{len(findings)} finding{'s' if len(findings) != 1 else ''} ({summary}) on {spot_nodes} Spot "
        f"node{'s' if spot_nodes != 1 else ''}."
    )
    return "\n".join(lines)
