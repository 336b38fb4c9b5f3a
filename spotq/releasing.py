"""`spotq release NODE...`: take spotq's marks off nodes that were not reclaimed after all.

A rebalance recommendation or a Health event may never be followed by the interruption; the operator then wants
the node back. Only what spotq set is undone: its taints and annotations, and the cordon and load-balancer label
where spotq's owner record says spotq set them. Pods drained away are not brought back (their controllers placed
them elsewhere).
"""

from __future__ import annotations

from spotq.errors import ApiError, SpotqError
from spotq.kube import marks
from spotq.kube.client import JSON, KubeClient
from spotq.settings import Settings


async def release(settings: Settings, node_names: list[str]) -> int:
    """Release each node; print one line per node. Exit code 0 if every node was released or had no marks."""
    client = await KubeClient.connect(settings.kube, max_connections=4)
    failures = 0
    prefix = settings.kube.taint_prefix

    def undo(node: JSON) -> JSON | None:
        return marks.release_patch(node, prefix)

    try:
        for name in node_names:
            try:
                changed = await marks.patch_node(client, name, undo)
            except ApiError as exc:
                failures += 1
                reason = "no such node" if exc.status == 404 else f"{exc.status} {exc.reason}"
                print(f"{name}: not released: {reason}")
                continue
            except SpotqError as exc:
                failures += 1
                print(f"{name}: not released: {exc}")
                continue
            print(f"{name}: {'released' if changed else 'carried no spotq marks'}")
    finally:
        await client.close()
    return 1 if failures else 0
