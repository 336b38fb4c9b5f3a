"""Kubernetes Events on Nodes: what `kubectl describe node` shows an operator about spotq's work."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from spotq.errors import SpotqError
from spotq.kube.client import KubeClient
from spotq.ports import NodeRef
from spotq.ratelimit import Priority

log = logging.getLogger(__name__)

COMPONENT = "spotq"


class EventRecorder:
    def __init__(self, client: KubeClient, *, enabled: bool = True) -> None:
        self._client = client
        self._enabled = enabled

    async def node_event(self, node: NodeRef, reason: str, message: str, *, warning: bool = False) -> None:
        """Best effort: a failed Event never fails the work it describes."""
        if not self._enabled:
            return
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{node.name}.{uuid.uuid4().hex[:16]}", "namespace": "default"},
            # kubectl describe node finds events by the node's UID (kubelet records them the same way).
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid},
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
                "POST", "/api/v1/namespaces/default/events", body=body, operation="create_event", priority=Priority.NOTE
            )
        except SpotqError as exc:
            log.warning("event not recorded", extra={"node": node.name, "reason": reason, "error": str(exc)[:200]})
