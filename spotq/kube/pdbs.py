"""PodDisruptionBudgets from one cluster-wide list+watch (watching.list_and_watch) into budgets.Budgets (a few
objects, a few KB each)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from spotq.budgets import Budgets
from spotq.kube import watching
from spotq.kube.transport import JSON, Transport

_RESOURCE = watching.Resource(
    "pdbs",
    "/apis/policy/v1/poddisruptionbudgets",
    hint="grant list and watch on policy/poddisruptionbudgets; meanwhile evictions refused by a PDB are retried "
    "on a timer",
)


async def watch_budgets(
    client: Transport, budgets: Budgets, *, backoff: watching.Backoff = watching.DEFAULT_BACKOFF
) -> None:
    """Keep `budgets` current forever. While the watch is broken (no RBAC yet, an API server restarting) budgets
    gate nothing and draining retries 429s; the watch keeps trying and gates again after its next full list."""

    async def listed(pdbs: AsyncIterator[JSON]) -> None:
        budgets.replace_all([pdb async for pdb in pdbs])
        budgets.active = True

    async def changed(kind: str, pdb: JSON) -> None:
        if kind == "DELETED":
            meta = pdb.get("metadata") or {}
            budgets.remove(meta.get("namespace", ""), meta.get("name", ""))
        else:
            budgets.update(pdb)

    await watching.list_and_watch(
        client, _RESOURCE, on_list=listed, on_event=changed, on_lost=budgets.stop, backoff=backoff
    )
