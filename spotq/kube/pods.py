"""Pods of one node: list, watch, evict (policy/v1 with a UID precondition), delete. Implements draining.PodApi."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from spotq.draining import Pod
from spotq.errors import ApiError
from spotq.kube.client import JSON, KubeClient

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
    )


class PodClient:
    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def list_on_node(self, node: str) -> tuple[list[Pod], str]:
        page = await self._client.request(
            "GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"}, operation="list_pods"
        )
        pods = [pod_from(item) for item in page.get("items", [])]
        return pods, str((page.get("metadata") or {}).get("resourceVersion", ""))

    async def watch_on_node(self, node: str, version: str) -> AsyncIterator[tuple[str, Pod | None, str]]:
        query = {"fieldSelector": f"spec.nodeName={node}", "resourceVersion": version, "timeoutSeconds": "240"}
        async for event in self._client.watch("/api/v1/pods", query, operation="watch_pods"):
            kind = str(event.get("type"))
            obj: dict[str, Any] = event.get("object") or {}
            if kind == "ERROR":
                raise ApiError(int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", "")))
            rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            yield kind, (None if kind == "BOOKMARK" else pod_from(obj)), rv

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


def _delete_options(pod: Pod, grace_seconds: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {"preconditions": {"uid": pod.uid}}
    if grace_seconds is not None:
        options["gracePeriodSeconds"] = grace_seconds
    return options
