"""Small shared waits and reads for integration tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from testenv import KubeClient, LocalCluster, MotoServer
from testenv.workloads import KWOK_ANNOTATION


def wait_until(what: str, check: Callable[[], Any], timeout: float = 90.0, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def queue_depth(moto: MotoServer, url: str) -> int:
    """Messages in the queue, visible or in flight."""
    attributes = moto.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


class BudgetWatch:
    """Samples every PDB in a namespace in the background and keeps the worst margin seen.

    margin = status.currentHealthy - status.desiredHealthy; a negative margin means a budget was violated.
    """

    def __init__(self, client: KubeClient, namespace: str, every: float = 0.1) -> None:
        self._client = client
        self._path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.worst: dict[str, int] = {}
        self.samples = 0

    def __enter__(self) -> BudgetWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pdb in self._client.list_items(self._path):
                status = pdb.get("status") or {}
                if "desiredHealthy" not in status:
                    continue
                margin = int(status.get("currentHealthy", 0)) - int(status["desiredHealthy"])
                name = pdb["metadata"]["name"]
                self.worst[name] = min(self.worst.get(name, margin), margin)
            self.samples += 1
            self._stop.wait(self._every)


def bind_pod(
    cluster: LocalCluster, namespace: str, node: str, name: str, labels: dict[str, str] | None = None, **spec: Any
) -> str:
    """A pod bound straight to `node` (spec.nodeName, no scheduler), grace 0 unless `spec` says; returns its UID."""
    created = cluster.client.create(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                "tolerations": [{"key": KWOK_ANNOTATION, "operator": "Exists", "effect": "NoSchedule"}],
                **spec,
            },
        },
    )
    return str(created["metadata"]["uid"])
