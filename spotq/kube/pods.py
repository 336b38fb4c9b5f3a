"""Pods of one node: followed (watching.list_and_watch, one watch-list request where the server streams a watch's
initial state; once the follower is quiet, on the watch quiet followers share: deletions.SharedDeletions), evicted
(policy/v1 with a UID precondition), deleted. Implements ports.PodApi.

An eviction or delete, once sent, runs to its answer even if the drain that sent it stops meanwhile (fenced, past
its deadline, spotq stopping): cut off mid-way, the API server can admit an eviction in the budget (the pod listed in
the PDB's status.disruptedPods) and then not delete the pod, and the budget is a disruption short for two minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

from spotq.kube import deletions, watching
from spotq.kube.transport import JSON, Transport
from spotq.ports import Pod

log = logging.getLogger(__name__)

_MIRROR = "kubernetes.io/config.mirror"


def pod_from(obj: JSON) -> Pod:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    owners = meta.get("ownerReferences") or []
    controller = next((o.get("kind") for o in owners if o.get("controller")), None)
    return Pod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        phase=(obj.get("status") or {}).get("phase", ""),
        grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30) or 0),
        controller_kind=controller,
        mirror=_MIRROR in (meta.get("annotations") or {}),
        uses_emptydir=any("emptyDir" in volume for volume in spec.get("volumes") or []),
        terminating=meta.get("deletionTimestamp") is not None,
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        critical=_critical(spec),
    )


# The built-in system priority classes (2000000000 and 2000001000); no user class may reach that priority.
_SYSTEM_CRITICAL = frozenset({"system-cluster-critical", "system-node-critical"})
_SYSTEM_PRIORITY = 2_000_000_000


def _critical(spec: JSON) -> bool:
    priority = spec.get("priority")
    return spec.get("priorityClassName") in _SYSTEM_CRITICAL or (
        isinstance(priority, int) and priority >= _SYSTEM_PRIORITY
    )


# A drain has a deadline: a broken pod watch is started again after 0.2 s, doubling up to 2 s.
DRAIN_BACKOFF = watching.Backoff(initial_seconds=0.2, max_seconds=2.0, denied_max_seconds=2.0)


class PodClient:
    def __init__(
        self,
        client: Transport,
        *,
        watch_list: bool = True,
        backoff: watching.Backoff = DRAIN_BACKOFF,
        shared_grace_watch: bool = False,
    ) -> None:
        self._client = client
        self._watch_list = watching.WatchList(supported=watch_list)
        self._backoff = backoff
        self._shared = deletions.SharedDeletions(client, backoff=backoff) if shared_grace_watch else None
        self._sent: set[asyncio.Task[JSON]] = set()  # requests whose caller may have gone: kept until answered

    async def follow_node(
        self,
        node: str,
        on_list: Callable[[list[Pod]], None],
        on_event: Callable[[str, Pod], None],
        quiet: asyncio.Event | None = None,
    ) -> NoReturn:
        """The node's pods into `on_list` (first and after each relist), then their changes into `on_event`,
        until cancelled. The first look is one request where the server allows watch-list (the refusal of a server
        that does not is remembered by this client). Once `quiet` is set (and this client shares a grace watch),
        the node's watch is closed and its pods' deletions come from the shared one; if that one cannot vouch for
        them (deletions.LostError), the node is listed again on its own watch and handed over again."""
        shared = self._shared
        if quiet is None or shared is None:
            await self._follow_own(node, on_list, on_event, None)
            raise AssertionError("a node's own watch goes on until cancelled")
        while True:
            since = await self._follow_own(node, on_list, on_event, quiet)
            try:
                await shared.follow(node, since, lambda pod: on_event("DELETED", pod))
            except deletions.LostError as exc:
                log.info("relisting a quiet drain's node", extra={"node": node, "why": str(exc)[:200]})

    async def _follow_own(
        self,
        node: str,
        on_list: Callable[[list[Pod]], None],
        on_event: Callable[[str, Pod], None],
        quiet: asyncio.Event | None,
    ) -> int:
        """The node's own list+watch, until `quiet` is set once its view has a version (never, without `quiet`):
        that version, as a number. A version that is not a number keeps the node's own watch to the end."""
        version = ""
        known = asyncio.Event()

        def seen(at: str) -> None:
            nonlocal version
            version = at
            known.set()

        async def listed(items: AsyncIterator[JSON]) -> None:
            on_list([pod_from(item) async for item in items])

        async def changed(kind: str, obj: JSON) -> None:
            on_event(kind, pod_from(obj))

        resource = watching.Resource(
            "pods", "/api/v1/pods", {"fieldSelector": f"spec.nodeName={node}"}, hint="grant list and watch on pods"
        )
        follow = watching.list_and_watch(
            self._client,
            resource,
            on_list=listed,
            on_event=changed,
            backoff=self._backoff,
            watch_list=self._watch_list,
            on_version=seen,
        )
        if quiet is None:
            await follow
        own = asyncio.ensure_future(follow)
        try:
            await quiet.wait()
            await known.wait()
            while (number := deletions.version_number(version)) is None:
                known.clear()
                await known.wait()  # resourceVersions are numbers on etcd; a server whose are not keeps this watch
            return number
        finally:
            own.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await own

    async def evict(self, pod: Pod, grace_seconds: int | None) -> None:
        await self._to_its_answer(
            "POST",
            f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction",
            body={
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "deleteOptions": _delete_options(pod, grace_seconds),
            },
            operation="evict_pod",
        )

    async def delete(self, pod: Pod, grace_seconds: int | None) -> None:
        await self._to_its_answer(
            "DELETE",
            f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
            body={"apiVersion": "v1", "kind": "DeleteOptions", **_delete_options(pod, grace_seconds)},
            operation="delete_pod",
        )

    async def _to_its_answer(self, method: str, path: str, *, body: JSON, operation: str) -> None:
        """The request, shielded from its caller's cancellation (see the module's docstring); the transport's
        own timeout still bounds it."""
        task = asyncio.ensure_future(self._client.request(method, path, body=body, operation=operation))
        self._sent.add(task)
        task.add_done_callback(self._answered)
        await asyncio.shield(task)

    def _answered(self, task: asyncio.Task[JSON]) -> None:
        self._sent.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away does not want it


def _delete_options(pod: Pod, grace_seconds: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {"preconditions": {"uid": pod.uid}}
    if grace_seconds is not None:
        options["gracePeriodSeconds"] = grace_seconds
    return options
