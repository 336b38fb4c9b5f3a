"""Count each contender's API requests from the API server's own audit log (one line per request).

`apiserver_request_total` has no label naming the client, and kwok, the controller-manager and the scheduler are
busy during every phase; the audit policy (see world.audit_policy) records only the benchmark's own
ServiceAccounts (spotq, kubectl drain, the ceiling client, aws-node-termination-handler), so each count here
is exactly that contender's requests, whatever else the cluster did.
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


@dataclass
class Requests:
    total: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    by_code: Counter[int] = field(default_factory=Counter)
    evictions_accepted: list[float] = field(default_factory=list)  # receive times of 2xx evictions
    # Pod name → when its first accepted eviction completed (the pod's grace starts then), for the deadline figures.
    evicted_at: dict[str, float] = field(default_factory=dict)
    throttled: int = 0  # 429 from API priority and fairness (not a PDB refusal)

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
                    done = _stamp(event.get("stageTimestamp") or event["requestReceivedTimestamp"])
                    requests.evicted_at.setdefault(ref.get("name", ""), done)
                if code == 429 and resource != "pods/eviction":
                    requests.throttled += 1
        return result
