"""The audit's reading edge: every list paged through to the end, GET only, namespaced when asked, and a refused
list is one ReadError naming the resource and the permission it needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import pytest

from spotq.audit import reading
from spotq.errors import ApiError
from spotq.ratelimit import Priority

JSON = dict[str, Any]


@dataclass
class PagedApi:
    """A Transport answering each path from its pages (three items per page, continue tokens between them)."""

    items: dict[str, list[JSON]] = field(default_factory=dict)
    refuse: dict[str, ApiError] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    page_size: int = 3

    async def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: JSON | None = None,
                      content_type: str = "application/json", operation: str,
                      priority: Priority = Priority.WORK) -> JSON:  # fmt: skip
        query = dict(query or {})
        self.calls.append((method, path, query))
        await asyncio.sleep(0)
        if path in self.refuse:
            raise self.refuse[path]
        start = int(query.get("continue", "0"))
        everything = self.items.get(path, [])
        end = start + self.page_size
        meta = {"continue": str(end)} if end < len(everything) else {"resourceVersion": "9"}
        return {"items": everything[start:end], "metadata": meta}

    def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        raise AssertionError("the audit never watches")


def named(prefix: str, n: int) -> list[JSON]:
    return [{"metadata": {"name": f"{prefix}-{i}"}} for i in range(n)]


async def test_every_list_is_read_to_its_last_page_with_get_only() -> None:
    api = PagedApi(
        items={
            "/api/v1/nodes": named("node", 7),
            "/api/v1/pods": named("pod", 4),
            "/apis/apps/v1/deployments": named("dep", 3),
            "/apis/apps/v1/daemonsets": named("ds", 1),
            "/apis/policy/v1/poddisruptionbudgets": named("pdb", 2),
        }
    )
    snapshot = await reading.read(api)
    assert [n["metadata"]["name"] for n in snapshot.nodes] == [f"node-{i}" for i in range(7)]
    assert len(snapshot.pods) == 4 and len(snapshot.deployments) == 3 and len(snapshot.budgets) == 2
    assert {method for method, _, _ in api.calls} == {"GET"}
    assert all(query["limit"] == "500" for _, _, query in api.calls)
    assert [q.get("continue") for _, path, q in api.calls if path == "/api/v1/nodes"] == [None, "3", "6"]
    pod_queries = [q for _, path, q in api.calls if path == "/api/v1/pods"]
    assert all(q["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed" for q in pod_queries)
    spotq_lists = {(path, q.get("labelSelector")) for _, path, q in api.calls if "labelSelector" in q}
    assert spotq_lists == {
        ("/apis/apps/v1/daemonsets", "app.kubernetes.io/part-of=spotq,app.kubernetes.io/component=imds-monitor"),
        ("/api/v1/pods", "app.kubernetes.io/part-of=spotq,app.kubernetes.io/component=imds-monitor"),
        ("/apis/apps/v1/deployments", "app.kubernetes.io/part-of=spotq,app.kubernetes.io/component=queue-consumer"),
    }


async def test_namespaces_narrow_the_workload_lists_not_the_nodes_or_spotqs_own() -> None:
    api = PagedApi(items={"/api/v1/namespaces/a/pods": named("a", 4), "/api/v1/namespaces/b/pods": named("b", 1)})
    snapshot = await reading.read(api, ["a", "b"])
    assert sorted(p["metadata"]["name"] for p in snapshot.pods) == ["a-0", "a-1", "a-2", "a-3", "b-0"]
    paths = {path for _, path, _ in api.calls}
    assert (
        "/apis/apps/v1/namespaces/b/statefulsets" in paths
        and "/apis/policy/v1/namespaces/a/poddisruptionbudgets" in paths
    )
    assert "/apis/apps/v1/statefulsets" not in paths
    assert {"/api/v1/nodes", "/apis/apps/v1/daemonsets", "/api/v1/pods", "/apis/apps/v1/deployments"} <= paths


async def test_a_refused_list_names_the_resource_and_the_permission() -> None:
    api = PagedApi(refuse={"/apis/apps/v1/statefulsets": ApiError(403, "Forbidden", "statefulsets.apps is forbidden")})
    with pytest.raises(reading.ReadError) as raised:
        await reading.read(api)
    assert (
        str(raised.value) == "cannot list statefulsets.apps: 403 Forbidden (the audit needs list on statefulsets.apps)"
    )
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]  # the other lists were cancelled
