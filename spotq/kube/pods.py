"""Pods of one node: list, watch, evict (policy/v1 with a UID precondition), delete. Implements ports.PodApi."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

from spotq.errors import ApiError
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


_INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# A server without watch-list (WatchList gate off, as on 1.33, or before 1.27) rejects sendInitialEvents.
_WATCH_LIST_REFUSED = frozenset({400, 403, 422})

Event = tuple[str, Pod | None, str]


class PodClient:
    def __init__(self, client: Transport, *, watch_list: bool = True) -> None:
        self._client = client
        self._watch_list = watch_list

    async def open_on_node(self, node: str) -> tuple[list[Pod], str, AsyncGenerator[Event, None] | None]:
        """The node's pods and a watch from that moment on, in one request where the server streams the initial
        state (watch-list, Kubernetes 1.34+); else a list, and the caller starts the watch (None)."""
        if self._watch_list:
            query = {
                "fieldSelector": f"spec.nodeName={node}",
                "sendInitialEvents": "true",
                "resourceVersionMatch": "NotOlderThan",
                "timeoutSeconds": "240",
            }
            stream = self._client.watch("/api/v1/pods", query, operation="watch_list_pods")
            pods: list[Pod] = []
            try:
                async for event in stream:
                    kind, obj = str(event.get("type")), event.get("object") or {}
                    if kind == "ERROR":
                        raise _error(obj)
                    if kind == "ADDED":
                        pods.append(pod_from(obj))
                    elif kind == "BOOKMARK" and _initial_events_end(obj):
                        return pods, _version_of(obj), _events(stream)
            except ApiError as exc:
                if exc.status not in _WATCH_LIST_REFUSED:
                    await stream.aclose()
                    raise
                self._watch_list = False
                log.info("the API server refuses watch-list; listing pods instead", extra={"status": exc.status})
            await stream.aclose()
        pods, version = await self.list_on_node(node)
        return pods, version, None

    async def list_on_node(self, node: str) -> tuple[list[Pod], str]:
        page = await self._client.request(
            "GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"}, operation="list_pods"
        )
        pods = [pod_from(item) for item in page.get("items", [])]
        return pods, str((page.get("metadata") or {}).get("resourceVersion", ""))

    def watch_on_node(self, node: str, version: str) -> AsyncGenerator[Event, None]:
        query = {"fieldSelector": f"spec.nodeName={node}", "resourceVersion": version, "timeoutSeconds": "240"}
        return _events(self._client.watch("/api/v1/pods", query, operation="watch_pods"))

    async def evict(self, pod: Pod, grace_seconds: int | None) -> None:
        await self._client.request(
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
        await self._client.request(
            "DELETE",
            f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
            body={"apiVersion": "v1", "kind": "DeleteOptions", **_delete_options(pod, grace_seconds)},
            operation="delete_pod",
        )


async def _events(stream: AsyncGenerator[JSON, None]) -> AsyncGenerator[Event, None]:
    """Watch events as (type, pod or None for bookmarks, resourceVersion); an ERROR event raises."""
    try:
        async for event in stream:
            kind = str(event.get("type"))
            obj: dict[str, Any] = event.get("object") or {}
            if kind == "ERROR":
                raise _error(obj)
            yield kind, (None if kind == "BOOKMARK" else pod_from(obj)), _version_of(obj)
    finally:
        await stream.aclose()


def _error(obj: JSON) -> ApiError:
    return ApiError(int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", "")))


def _version_of(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _initial_events_end(obj: JSON) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(_INITIAL_EVENTS_END) == "true"


def _delete_options(pod: Pod, grace_seconds: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {"preconditions": {"uid": pod.uid}}
    if grace_seconds is not None:
        options["gracePeriodSeconds"] = grace_seconds
    return options
