"""Pods as the drain sees them: the API object → ports.Pod translation."""

from __future__ import annotations

from typing import Any

import pytest

from spotq.kube.pods import pod_from


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "kube-system", "name": "p", "uid": "u"}, "spec": spec, "status": {}}


@pytest.mark.parametrize(
    ("spec", "critical"),
    [
        ({"priorityClassName": "system-cluster-critical", "priority": 2000000000}, True),
        ({"priorityClassName": "system-node-critical"}, True),
        ({"priority": 2000001000}, True),  # the class name dropped, the admitted priority kept
        ({"priorityClassName": "high", "priority": 1000000}, False),
        ({}, False),
    ],
)
def test_system_critical_pods_are_known_by_class_or_priority(spec: dict[str, Any], critical: bool) -> None:
    assert pod_from(pod(**spec)).critical is critical
