"""The contenders that are not spotq: `kubectl drain` ten at a time (what aws-node-termination-handler does
with its defaults), and minimal concurrent clients that find the API server's own ceilings for taint+cordon
patches and for evictions.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from testenv import tools

# NTH's defaults: 10 workers, and the drain helper's flags.
KUBECTL_WORKERS = 10
KUBECTL_FLAGS = ("--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=120s")


@dataclass
class KubectlDrains:
    """`kubectl drain` for each node, `workers` at a time, in the order the warnings were sent.

    No new drain starts after `time_limit` s (the running ones finish, each bounded by its 120 s timeout); nodes
    never started are reported so the caller can project the rate instead of waiting for hours.
    """

    kubeconfig: Path
    cache_dir: Path
    nodes: Sequence[str]
    workers: int = KUBECTL_WORKERS
    time_limit: float = 900.0
    started: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _kubectl(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        argv = [str(tools.tool("kubectl")), f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def warm_up(self) -> None:
        """Fill kubectl's discovery cache once, so no drain pays for discovery (NTH embeds the library)."""
        self._kubectl("get", "nodes", "--request-timeout=30s", "-o", "name")

    def run(self) -> None:
        begin = time.monotonic()

        def drain(node: str) -> None:
            if time.monotonic() - begin > self.time_limit:
                return
            with self._lock:
                self.started[node] = time.time()
            try:
                result = self._kubectl("drain", node, *KUBECTL_FLAGS, timeout=180)
                code, err = result.returncode, result.stderr
            except subprocess.TimeoutExpired:
                code, err = -1, "kubectl did not end within 180 s"
            with self._lock:
                self.finished[node] = time.time()
                self.exit_codes[node] = code
                if code != 0:
                    self.errors[node] = err.strip()[-300:]

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(drain, self.nodes))

    @property
    def not_started(self) -> list[str]:
        return [n for n in self.nodes if n not in self.started]


@dataclass
class _ApiClient:
    """A bare client of the API server: a bearer token, the cluster's CA, `limit` connections kept alive."""

    server_url: str
    ca: Path
    token: str

    def _session(self, limit: int, content_type: str = "application/json") -> aiohttp.ClientSession:
        context = ssl.create_default_context(cafile=str(self.ca))
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ssl=context), headers=headers)


@dataclass
class EvictionCeiling(_ApiClient):
    """POST an Eviction for every pod, nothing else (no list, no waiting for deletion), as fast as the API server
    takes them: `lanes` requests in flight per PodDisruptionBudget, all budgets at once.

    One lane per budget is the API server's best case: evictions under one budget rewrite its status and
    concurrent ones conflict inside the server, which retries each loser after 500 ms. A 429 is retried after
    100 ms; everything is bounded by `time_limit`.
    """

    namespace: str = "default"
    lanes: int = 1
    time_limit: float = 120.0
    accepted: int = 0
    refused: int = 0
    errors: int = 0
    seconds: float = 0.0

    def run(self, pods: Sequence[tuple[str, str]]) -> None:
        asyncio.run(self._run(pods))

    async def _run(self, pods: Sequence[tuple[str, str]]) -> None:
        # Pods are named <deployment>-<replicaset hash>-<suffix>; each Deployment has its own PDB.
        queues: dict[str, asyncio.Queue[tuple[str, str]]] = {}
        for name, uid in pods:
            queues.setdefault(name.rsplit("-", 2)[0], asyncio.Queue()).put_nowait((name, uid))
        deadline = time.monotonic() + self.time_limit
        async with self._session(len(queues) * self.lanes + 1) as session:

            async def lane(queue: asyncio.Queue[tuple[str, str]]) -> None:
                while not queue.empty() and time.monotonic() < deadline:
                    name, uid = queue.get_nowait()
                    body: dict[str, Any] = {
                        "apiVersion": "policy/v1",
                        "kind": "Eviction",
                        "metadata": {"name": name, "namespace": self.namespace},
                        "deleteOptions": {"preconditions": {"uid": uid}},
                    }
                    url = f"{self.server_url}/api/v1/namespaces/{self.namespace}/pods/{name}/eviction"
                    try:
                        async with session.post(url, json=body) as response:
                            await response.read()
                            status = response.status
                    except aiohttp.ClientError:
                        self.errors += 1
                        queue.put_nowait((name, uid))
                        continue
                    if 200 <= status < 300 or status in (404, 409):
                        self.accepted += 1
                    elif status == 429:
                        self.refused += 1
                        queue.put_nowait((name, uid))
                        await asyncio.sleep(0.1)
                    else:
                        self.errors += 1

            started = time.monotonic()
            await asyncio.gather(*(lane(q) for q in queues.values() for _ in range(self.lanes)))
            self.seconds = time.monotonic() - started


@dataclass
class MarkCeiling(_ApiClient):
    """Taint and cordon every node with one JSON merge PATCH each (spotq's own request shape, without the
    resourceVersion precondition or anything else), `in_flight` at a time on kept-alive connections, as fast as the
    API server takes them. `rate` is nodes per second from the first request sent to the last answer."""

    taint: str = "spotq.io/spot-interruption"
    in_flight: int = 64
    done: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.done / self.seconds if self.seconds > 0 else None

    def run(self, nodes: Sequence[str]) -> None:
        asyncio.run(self._run(nodes))

    async def _run(self, nodes: Sequence[str]) -> None:
        body = {"spec": {"unschedulable": True, "taints": [{"key": self.taint, "value": "", "effect": "NoSchedule"}]}}
        queue: asyncio.Queue[str] = asyncio.Queue()
        for name in nodes:
            queue.put_nowait(name)
        async with self._session(self.in_flight, "application/merge-patch+json") as session:

            async def lane() -> None:
                while not queue.empty():
                    name = queue.get_nowait()
                    try:
                        async with session.patch(f"{self.server_url}/api/v1/nodes/{name}", json=body) as response:
                            await response.read()
                            ok = response.status < 300
                    except aiohttp.ClientError:
                        ok = False
                    if ok:
                        self.done += 1
                    else:
                        self.errors += 1

            started = time.monotonic()
            await asyncio.gather(*(lane() for _ in range(self.in_flight)))
            self.seconds = time.monotonic() - started
