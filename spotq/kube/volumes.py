"""The cluster's VolumeAttachments (storage.k8s.io/v1) from one list+watch, by node: a terminate hook may wait for
its node's volumes to be detached before it is completed (SPOTQ_DRAIN__WAIT_FOR_VOLUME_DETACH).

VolumeAttachments cannot be selected by `spec.nodeName` on the server, so one cluster-wide watch (small objects,
one per attached volume) serves every drain, rather than one watch per node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from spotq.kube import watching
from spotq.kube.transport import JSON, Transport

_RESOURCE = watching.Resource(
    "volumeattachments",
    "/apis/storage.k8s.io/v1/volumeattachments",
    hint="grant list and watch on storage.k8s.io/volumeattachments (the chart does with "
    "drain.waitForVolumeDetach); meanwhile hooks are completed without waiting for volumes",
)


class VolumeAttachmentIndex:
    """ports.VolumeAttachments: which nodes still have volumes attached, fed by `run()`."""

    def __init__(self) -> None:
        self._nodes: dict[str, str] = {}  # attachment name → node name
        self._current = False
        self._changed = asyncio.Condition()
        self._telling: asyncio.Task[None] | None = None  # the notification that the mirror was lost

    def attached(self, node: str) -> int:
        return sum(1 for name in self._nodes.values() if name == node)

    async def wait_detached(self, node: str) -> bool:
        """Return once no VolumeAttachment names `node`: True; False at once while the mirror is not current
        (never listed, or its watch is broken): nothing is known to wait for."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._current or self.attached(node) == 0)
            return self._current

    async def run(self, client: Transport, *, backoff: watching.Backoff = watching.DEFAULT_BACKOFF) -> None:
        async def listed(items: AsyncIterator[JSON]) -> None:
            self._nodes = {_name(item): _node(item) async for item in items}
            self._current = True
            await self._notify()

        async def changed(kind: str, item: JSON) -> None:
            if kind == "DELETED":
                self._nodes.pop(_name(item), None)
            else:
                self._nodes[_name(item)] = _node(item)
            await self._notify()

        def lost() -> None:
            self._current = False
            self._telling = asyncio.get_running_loop().create_task(self._notify())

        await watching.list_and_watch(
            client, _RESOURCE, on_list=listed, on_event=changed, on_lost=lost, backoff=backoff
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def _name(item: JSON) -> str:
    return str((item.get("metadata") or {}).get("name", ""))


def _node(item: JSON) -> str:
    return str((item.get("spec") or {}).get("nodeName", ""))
