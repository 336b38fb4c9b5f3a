"""Kubernetes Events on Nodes and Pods: what `kubectl describe node` (and `describe pod`, for a pod spotq evicted)
shows an operator about spotq's work."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from spotq.errors import SpotqError
from spotq.kube.client import KubeClient
from spotq.ports import NodeRef, Pod
from spotq.ratelimit import Priority

log = logging.getLogger(__name__)

COMPONENT = "spotq"


class EventRecorder:
    def __init__(self, client: KubeClient, *, enabled: bool = True) -> None:
        self._client = client
        self._enabled = enabled

    async def node_event(self, node: NodeRef, reason: str, message: str, *, warning: bool = False) -> None:
        """Best effort: a failed Event never fails the work it describes."""
        # kubectl describe node finds events by the node's UID (kubelet records them the same way).
        involved = {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid}
        await self._record("default", involved, reason, message, warning=warning)

    async def pod_event(self, pod: Pod, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event on a pod, in its namespace (best effort, like node_event)."""
        involved = {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid}
        await self._record(pod.namespace, involved, reason, message, warning=warning)

    async def _record(
        self, namespace: str, involved: dict[str, str], reason: str, message: str, *, warning: bool
    ) -> None:
        if not self._enabled:
            return
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._client.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/events",
                body=body,
                operation="create_event",
                priority=Priority.NOTE,
            )
        except SpotqError as exc:
            log.warning(
                "event not recorded",
                extra={"object": f"{involved['kind']}/{involved['name']}", "reason": reason, "error": str(exc)[:200]},
            )
