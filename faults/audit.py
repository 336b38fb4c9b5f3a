"""spotq's requests, from the API server's audit log (faults.env records every spotq ServiceAccount, one per process).

A drain shows in the log as requests for the pods of one node: a list with `fieldSelector=spec.nodeName=<node>`
and a watch with the same selector (nothing else spotq sends asks for pods by node). A watch is logged when it
ends (its `stageTimestamp`), so a drain's activity on a node is the span from its first such request to the end of
its last. Evictions are `create pods/eviction`; a 2xx is an accepted one.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Request:
    user: str
    verb: str
    resource: str  # "pods", "pods/eviction", "nodes", ...
    namespace: str
    name: str
    code: int
    received: float
    completed: float
    node: str  # for pod list/watch by node: the node; else ""


@dataclass
class Eviction:
    pod: str  # namespace/name
    user: str
    at: float  # when the API server answered
    code: int


@dataclass
class Audit:
    requests: list[Request] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path, since: float = 0.0) -> Audit:
        audit = cls()
        if not path.exists():
            return audit
        seen: set[str] = set()
        with path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if event.get("auditID") in seen:
                    continue
                seen.add(event.get("auditID"))
                received = _stamp(event["requestReceivedTimestamp"])
                if received < since:
                    continue
                ref = event.get("objectRef") or {}
                resource = str(ref.get("resource", ""))
                if ref.get("subresource"):
                    resource += "/" + str(ref["subresource"])
                node = ""
                if resource == "pods" and event.get("verb") in ("list", "watch"):
                    query = parse_qs(urlsplit(str(event.get("requestURI", ""))).query)
                    selector = (query.get("fieldSelector") or [""])[0]
                    if selector.startswith("spec.nodeName="):
                        node = selector.removeprefix("spec.nodeName=")
                audit.requests.append(
                    Request(
                        user=str((event.get("user") or {}).get("username", "")),
                        verb=str(event.get("verb", "")),
                        resource=resource,
                        namespace=str(ref.get("namespace", "")),
                        name=str(ref.get("name", "")),
                        code=int((event.get("responseStatus") or {}).get("code", 0)),
                        received=received,
                        completed=_stamp(event.get("stageTimestamp") or event["requestReceivedTimestamp"]),
                        node=node,
                    )
                )
        audit.requests.sort(key=lambda r: r.received)
        return audit

    def evictions(self, namespace: str | None = None) -> list[Eviction]:
        return [
            Eviction(f"{r.namespace}/{r.name}", r.user, r.completed, r.code)
            for r in self.requests
            if r.resource == "pods/eviction" and (namespace is None or r.namespace == namespace)
        ]

    def accepted(self, namespace: str | None = None) -> dict[str, list[Eviction]]:
        """Pod → its accepted (2xx) evictions, in order."""
        found: dict[str, list[Eviction]] = defaultdict(list)
        for eviction in self.evictions(namespace):
            if 200 <= eviction.code < 300:
                found[eviction.pod].append(eviction)
        return dict(found)

    def evicted_twice(self, namespace: str | None = None) -> list[str]:
        return sorted(pod for pod, done in self.accepted(namespace).items() if len(done) > 1)

    def drain_requests(self, node: str) -> list[Request]:
        return [r for r in self.requests if r.node == node]

    def drain_spans(self, node: str) -> dict[str, tuple[float, float]]:
        """user → (first request, end of the last) of its pod requests for `node`."""
        spans: dict[str, tuple[float, float]] = {}
        for r in self.drain_requests(node):
            first, last = spans.get(r.user, (r.received, r.completed))
            spans[r.user] = (min(first, r.received), max(last, r.completed))
        return spans

    def first_drain_request(self, user: str, node: str, after: float = 0.0, *, answered: bool = False) -> float | None:
        """When `user` first asked for `node`'s pods from `after` on (`answered`: and was answered with a 2xx)."""
        return next(
            (
                r.received
                for r in self.drain_requests(node)
                if r.user == user and r.received >= after and (not answered or 200 <= r.code < 300)
            ),
            None,
        )

    def first_request(self, user: str, after: float = 0.0) -> float | None:
        return next((r.received for r in self.requests if r.user == user and r.received >= after), None)

    def last_request(self, user: str, before: float) -> float | None:
        return max((r.received for r in self.requests if r.user == user and r.received < before), default=None)

    def first_eviction(self, user: str, after: float = 0.0, pods: set[str] | None = None) -> float | None:
        return next(
            (
                r.received
                for r in self.requests
                if r.user == user
                and r.resource == "pods/eviction"
                and r.received >= after
                and (pods is None or f"{r.namespace}/{r.name}" in pods)
            ),
            None,
        )

    def by_user(self) -> dict[str, int]:
        return dict(Counter(r.user for r in self.requests))
