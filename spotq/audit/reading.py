"""The audit's one edge: list what the checks need through spotq's KubeClient, page by page. Read-only: GET only.

Cluster-wide: nodes, and spotq's own DaemonSets, Deployments and IMDS pods (found by the chart's labels). Per
audited namespace (or cluster-wide): pods not yet finished, Deployments, StatefulSets, ReplicaSets, PDBs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from spotq.errors import ApiError, SpotqError
from spotq.kube.transport import JSON, Transport
from spotq.kube.watching import PAGE_SIZE
from spotq.ratelimit import Priority

from .views import IMDS_COMPONENT, PART_OF, QUEUE_COMPONENT, Snapshot

_UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed"
_IMDS = f"{PART_OF[0]}={PART_OF[1]},{IMDS_COMPONENT[0]}={IMDS_COMPONENT[1]}"
_QUEUE = f"{PART_OF[0]}={PART_OF[1]},{QUEUE_COMPONENT[0]}={QUEUE_COMPONENT[1]}"


class ReadError(SpotqError):
    """The cluster could not be read: the audit has no verdict."""


async def list_all(
    client: Transport,
    path: str,
    resource: str,
    query: dict[str, str] | None = None,
    priority: Priority = Priority.WORK,
) -> list[JSON]:
    """Every item under `path`, following continue tokens; `resource` (e.g. 'deployments.apps') names it in an
    error and in the RBAC hint."""
    items: list[JSON] = []
    page_query = {"limit": str(PAGE_SIZE), **(query or {})}
    while True:
        try:
            operation = f"audit_list_{resource.split('.')[0]}"
            page = await client.request("GET", path, query=page_query, operation=operation, priority=priority)
        except ApiError as exc:
            hint = f" (the audit needs list on {resource})" if exc.status in (401, 403) else ""
            raise ReadError(f"cannot list {resource}: {exc.status} {exc.reason}{hint}") from None
        except SpotqError as exc:
            raise ReadError(f"cannot list {resource}: {exc}") from None
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items
        page_query = {**page_query, "continue": token}


async def read(client: Transport, namespaces: Sequence[str] = (), priority: Priority = Priority.WORK) -> Snapshot:
    """One snapshot; `namespaces` empty: every namespace. `priority`: where its requests wait in a shared client
    (the daemon's periodic audit waits behind taints, drains and Events)."""

    def listed(path: str, resource: str, query: dict[str, str] | None = None) -> Coroutine[Any, Any, list[JSON]]:
        return list_all(client, path, resource, query, priority)

    async def scoped(api: str, plural: str, resource: str, query: dict[str, str] | None = None) -> list[JSON]:
        if not namespaces:
            return await listed(f"{api}/{plural}", resource, query)
        lists = await _all(*(listed(f"{api}/namespaces/{ns}/{plural}", resource, query) for ns in namespaces))
        return [item for items in lists for item in items]

    unfinished = {"fieldSelector": _UNFINISHED}
    lists = await _all(
        listed("/api/v1/nodes", "nodes"),
        scoped("/api/v1", "pods", "pods", unfinished),
        scoped("/apis/apps/v1", "deployments", "deployments.apps"),
        scoped("/apis/apps/v1", "statefulsets", "statefulsets.apps"),
        scoped("/apis/apps/v1", "replicasets", "replicasets.apps"),
        scoped("/apis/policy/v1", "poddisruptionbudgets", "poddisruptionbudgets.policy"),
        listed("/apis/apps/v1/daemonsets", "daemonsets.apps", {"labelSelector": _IMDS}),
        listed("/api/v1/pods", "pods", {"labelSelector": _IMDS, **unfinished}),
        listed("/apis/apps/v1/deployments", "deployments.apps", {"labelSelector": _QUEUE}),
    )
    nodes, pods, deployments, statefulsets, replicasets, budgets, imds_daemonsets, imds_pods, queue_deployments = lists
    return Snapshot(
        nodes=nodes,
        pods=pods,
        deployments=deployments,
        statefulsets=statefulsets,
        replicasets=replicasets,
        budgets=budgets,
        imds_daemonsets=imds_daemonsets,
        imds_pods=imds_pods,
        queue_deployments=queue_deployments,
    )


async def _all(*lists: Coroutine[Any, Any, list[JSON]]) -> list[list[JSON]]:
    """Run the lists together; the first to fail cancels the others and is raised as it is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(each) for each in lists]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
