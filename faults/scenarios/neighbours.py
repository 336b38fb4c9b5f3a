"""Noisy neighbours: other clients flood the API server while spotq drains a wave, with and without the chart's
FlowSchema (helm/spotq/templates/flowschema.yaml), to measure what it is for.

API Priority and Fairness gives every ServiceAccount outside kube-system the `workload-low` level and, inside a
level, each user a fair share of its seats. A flood from one client leaves spotq its share; a flood from many
(here `flood_clients` ServiceAccounts, one thread each, listing every pod in a loop) leaves it 1/(N+1) of the level,
and what does not fit the level's queues in time is turned away with 429. The chart's FlowSchema serves spotq's
ServiceAccount in `workload-high` instead (here: the group of spotq-system's ServiceAccounts, every spotq process
of the environment). The API server runs with `flood_seats` request seats for the whole scenario, so that a flood a
2-core machine can send fills `workload-low`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from faults import apiserver
from faults.audit import Request
from faults.env import SPOTQ_NS, Environment
from faults.measure import Figures
from faults.trial import Options, Trial
from testenv import workloads
from testenv.kube import KubeClient

FLOOD_NS = "default"  # outside spotq-system: the audit log keeps spotq's requests only
FLOWCONTROL = "/apis/flowcontrol.apiserver.k8s.io/v1"


def flow_schema() -> dict[str, object]:
    """The chart's FlowSchema (values flowSchema.*: workload-high, precedence 1000) for every spotq process of the
    environment: each has a ServiceAccount of its own in spotq-system, so the subject is their group."""
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": "spotq"},
        "spec": {
            "priorityLevelConfiguration": {"name": "workload-high"},
            "matchingPrecedence": 1000,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [{"kind": "Group", "group": {"name": f"system:serviceaccounts:{SPOTQ_NS}"}}],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                            "clusterScope": True,
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }


@dataclass
class Flood:
    """`clients` threads, each a ServiceAccount of its own, listing every pod until stopped; answers counted."""

    env: Environment
    clients: int
    answers: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Flood:
        kube = self.env.kube
        for i in range(self.clients):
            name = f"neighbour-{i}"
            kube.create_service_account(FLOOD_NS, name)
            token = workloads.mint_token(kube.client, FLOOD_NS, name)
            client = KubeClient(kube.server_url, kube.ca_path, token=token, timeout=60)
            self._threads.append(threading.Thread(target=self._run, args=(client,), daemon=True))
        kube.client.create(  # `view` for the whole group: one binding, list pods and nothing to write
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": "neighbours"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [
                    {
                        "kind": "Group",
                        "name": f"system:serviceaccounts:{FLOOD_NS}",
                        "apiGroup": "rbac.authorization.k8s.io",
                    }
                ],
            },
        )
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, client: KubeClient) -> None:
        while not self._stop.is_set():
            try:
                status, _ = client.raw("GET", "/api/v1/pods")
            except OSError:
                status = 0
            with self._lock:
                self.answers[status] += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(70)


def latencies(requests: list[Request]) -> dict[str, float]:
    """p50 / p99 / max of the API server's time on each request (watches aside: they last)."""
    spans = sorted(r.completed - r.received for r in requests if r.verb != "watch")
    if not spans:
        return {}

    def at(share: float) -> float:
        return round(spans[min(len(spans) - 1, int(share * len(spans)))], 3)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(spans[-1], 3)}


def neighbours(env: Environment, opts: Options, *, with_flow_schema: bool) -> Figures:
    reads, writes = opts.flood_seats
    name = "neighbour-flood" if with_flow_schema else "neighbour-flood-no-flowschema"
    where = "spotq in workload-high (the chart's FlowSchema)" if with_flow_schema else "spotq in workload-low"
    title = f"{opts.flood_clients} other ServiceAccounts flood the API server ({reads}+{writes} seats); {where}"
    apiserver.kill(env.kube)
    apiserver.restart(env.kube, seats=opts.flood_seats)
    if with_flow_schema:
        env.kube.client.create(f"{FLOWCONTROL}/flowschemas", flow_schema())
    trial = Trial(env, opts, name, title)
    proc = env.spotq("spotq-0")
    flood = Flood(env, opts.flood_clients).start()
    started = time.time()
    try:
        trial.interrupt()
        trial.settle()
    finally:
        flood.stop()
    ended = time.time()
    found = trial.finish(serving=[proc])
    ours = [r for r in trial.audit.requests if r.user == proc.user and started <= r.received <= ended]
    found.details.update(
        {
            "flow_schema": with_flow_schema,
            "flood_seconds": round(ended - started, 1),
            "flood_answers": {str(code): count for code, count in sorted(flood.answers.items())},
            "spotq_requests_during_flood": len(ours),
            "spotq_429s_during_flood": sum(1 for r in ours if r.code == 429),
            "spotq_request_seconds": latencies(ours),
        }
    )
    return found
