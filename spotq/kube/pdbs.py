"""PodDisruptionBudgets from one cluster-wide list+watch into budgets.Budgets (a few objects, a few KB each)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from spotq.budgets import Budgets
from spotq.errors import ApiError, TransientError
from spotq.kube.client import KubeClient

log = logging.getLogger(__name__)

_PATH = "/apis/policy/v1/poddisruptionbudgets"


async def watch_budgets(client: KubeClient, budgets: Budgets) -> None:
    """Keep `budgets` current forever. Without RBAC to list PDBs, say so once and leave draining to retry 429s."""
    while True:
        try:
            version = await _list(client, budgets)
            budgets.active = True
            while True:
                version = await _watch(client, budgets, version)
        except ApiError as exc:
            budgets.stop()
            if exc.status in (401, 403, 404):
                log.warning(
                    "cannot watch PodDisruptionBudgets; evictions refused by a PDB are retried on a timer instead",
                    extra={"status": exc.status, "hint": "grant list and watch on policy/poddisruptionbudgets"},
                )
                return
            log.warning("PDB watch interrupted, relisting", extra={"error": str(exc)[:200]})
        except TransientError as exc:
            budgets.stop()
            log.warning("PDB watch interrupted, relisting", extra={"error": str(exc)[:200]})
        await asyncio.sleep(1.0)


async def _list(client: KubeClient, budgets: Budgets) -> str:
    items: list[dict[str, Any]] = []
    query = {"limit": "500"}
    while True:
        page = await client.request("GET", _PATH, query=query, operation="list_pdbs")
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            break
        query = {"limit": "500", "continue": token}
    budgets.replace_all(items)
    return str((page.get("metadata") or {}).get("resourceVersion", ""))


async def _watch(client: KubeClient, budgets: Budgets, version: str) -> str:
    query = {"resourceVersion": version, "timeoutSeconds": "300"}
    async for event in client.watch(_PATH, query, operation="watch_pdbs"):
        kind = event.get("type")
        obj: dict[str, Any] = event.get("object") or {}
        if kind == "ERROR":
            if int(obj.get("code", 500)) == 410:
                raise TransientError("PDB watch expired (410)")
            raise ApiError(int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", "")))
        version = (obj.get("metadata") or {}).get("resourceVersion", version)
        if kind in ("ADDED", "MODIFIED"):
            budgets.update(obj)
        elif kind == "DELETED":
            meta = obj.get("metadata") or {}
            budgets.remove(meta.get("namespace", ""), meta.get("name", ""))
    return version
