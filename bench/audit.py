"""Count each contender's API requests from the API server's own audit log (one line per request).

`apiserver_request_total` has no label naming the client, and kwok, the controller-manager and the scheduler are
busy during every phase; the audit policy (see world.audit_policy) records only the benchmark's own
ServiceAccounts (spotq, kubectl drain, the ceiling client, aws-node-termination-handler), so each count here
is exactly that contender's requests, whatever else the cluster did.

Node writes are recorded with their request body (the policy's Request level for them): when a contender's write
that tainted or cordoned a node returned is the moment the node was marked, as the API server has it. A watch
(bench/observing.py) sees the same change later, by however far its delivery lags under the wave's load: the
taint+cordon ceiling's client times its own answers, so spotq's rate against it is timed by the answers too.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _completed(event: dict[str, Any]) -> float:
    """When the request's response was complete (its receipt where the stage time is missing)."""
    return _stamp(event.get("stageTimestamp") or event["requestReceivedTimestamp"])


@dataclass
class Requests:
    total: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    by_code: Counter[int] = field(default_factory=Counter)
    evictions_accepted: list[float] = field(default_factory=list)  # receive times of 2xx evictions
    # Pod name → when its first accepted eviction completed (the pod's grace starts then), for the deadline figures.
    evicted_at: dict[str, float] = field(default_factory=dict)
    throttled: int = 0  # 429 from API priority and fairness (not a PDB refusal)
    # Node name → when the first accepted write cordoning it completed; node name → taint key → the same for the
    # taint (whichever of the contender's writes carried it: spotq sends both in one PATCH, NTH in two requests).
    cordoned_at: dict[str, float] = field(default_factory=dict)
    tainted_at: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_operation": dict(self.by_operation.most_common()),
            "by_code": {str(k): v for k, v in sorted(self.by_code.items())},
            "evictions_accepted": len(self.evictions_accepted),
        }

    def eviction_rate(self) -> float | None:
        """Accepted evictions per second, first to last accepted."""
        times = sorted(self.evictions_accepted)
        if len(times) < 2 or times[-1] == times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def marked_at(self, taint_key: str | None) -> dict[str, float]:
        """Node name → when it was cordoned and (unless `taint_key` is None) tainted with `taint_key`, the later."""
        found: dict[str, float] = {}
        for node, cordoned in self.cordoned_at.items():
            tainted = self.tainted_at.get(node, {}).get(taint_key) if taint_key is not None else cordoned
            if tainted is not None:
                found[node] = max(cordoned, tainted)
        return found

    def note_node_write(self, node: str, body: Any, done: float) -> None:
        """Record what an accepted node write (`body`: its request object) marked, at `done`."""
        cordon, taints = node_marks_in(body)
        if cordon:
            self.cordoned_at.setdefault(node, done)
        for key in taints:
            self.tainted_at.setdefault(node, {}).setdefault(key, done)


def node_marks_in(body: Any) -> tuple[bool, set[str]]:
    """Whether a node write's body cordons the node, and the taint keys it sets (pure). A merge or strategic
    merge patch and an update carry `spec`; a JSON patch is a list of operations."""
    if isinstance(body, dict):
        spec = body.get("spec")
        if not isinstance(spec, dict):
            return False, set()
        taints = spec.get("taints")
        keys = {t["key"] for t in taints if isinstance(t, dict) and "key" in t} if isinstance(taints, list) else set()
        return spec.get("unschedulable") is True, keys
    cordon, keys = False, set()
    for op in body if isinstance(body, list) else []:
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace"):
            continue
        path, value = op.get("path", ""), op.get("value")
        if path == "/spec/unschedulable" and value is True:
            cordon = True
        elif path == "/spec" or path.startswith("/spec/taints"):
            more = node_marks_in({"spec": value} if path == "/spec" else {"spec": {"taints": _as_list(value)}})
            cordon, keys = cordon or more[0], keys | more[1]
    return cordon, keys


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class AuditLog:
    """Reads the log incrementally: `mark()` before a phase, `since_mark(user)` after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self, users: list[str]) -> dict[str, Requests]:
        wanted = set(users)
        result = {u: Requests() for u in users}
        seen: set[str] = set()
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                event = json.loads(raw)
                name = (event.get("user") or {}).get("username", "")
                if name not in wanted or event.get("auditID") in seen:
                    continue
                seen.add(event.get("auditID"))
                requests = result[name]
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "")
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                verb = event.get("verb", "")
                code = int((event.get("responseStatus") or {}).get("code", 0))
                requests.total += 1
                requests.by_operation[f"{verb} {resource}"] += 1
                requests.by_code[code] += 1
                if resource == "pods/eviction" and 200 <= code < 300:
                    requests.evictions_accepted.append(_stamp(event["requestReceivedTimestamp"]))
                    requests.evicted_at.setdefault(ref.get("name", ""), _completed(event))
                if resource == "nodes" and verb in ("patch", "update") and 200 <= code < 300:
                    requests.note_node_write(ref.get("name", ""), event.get("requestObject"), _completed(event))
                if code == 429 and resource != "pods/eviction":
                    requests.throttled += 1
        return result
