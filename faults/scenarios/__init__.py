"""Every scenario by name, in the order the report runs them: what it does and which queue endpoint it needs.

A scenario is a function (Environment, Options) → Figures; it gets a fresh environment of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from faults.env import Environment
from faults.measure import Figures
from faults.scenarios import control_plane, neighbours, process, queue, soak
from faults.trial import Options

Run = Callable[[Environment, Options], Figures]


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str
    title: str
    run: Run
    sqs: str | None = None  # the endpoint it must have (None: the report's choice)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("kill-restart", "process", "kill -9 mid-wave, then restart", process.kill_restart),
        Scenario("apiserver-pause", "control plane", "kube-apiserver SIGSTOP mid-wave, then SIGCONT",
                 control_plane.apiserver_pause),
        Scenario("apiserver-restart", "control plane", "kube-apiserver kill -9 mid-wave, then restart",
                 control_plane.apiserver_restart),
        Scenario("apiserver-throttled", "control plane", "kube-apiserver with a few request seats mid-wave",
                 control_plane.apiserver_throttled),
        Scenario("token-revoked", "control plane", "spotq's token revoked mid-wave, then a new one",
                 control_plane.token_revoked),
        Scenario("neighbour-flood", "control plane", "other clients flood the API server; spotq in its FlowSchema",
                 partial(neighbours.neighbours, with_flow_schema=True)),
        Scenario("neighbour-flood-no-flowschema", "control plane",
                 "other clients flood the API server; spotq without its FlowSchema",
                 partial(neighbours.neighbours, with_flow_schema=False)),
        Scenario("sqs-hung", "queue", "SQS endpoint hung (SIGSTOP) while drains finish", queue.sqs_hung),
        Scenario("sqs-refused", "queue", "SQS endpoint refusing connections, then back on its port",
                 queue.sqs_refused),
        Scenario("duplicates", "queue", "every warning 3x, plus a state change", queue.duplicates),
        Scenario("rolling-update", "process", "SIGTERM mid-wave with the new process up", process.rolling_update),
        Scenario("replicas-2", "process", "2 replicas on one wave, one killed mid-wave",
                 partial(process.replicas, count=2)),
        Scenario("replicas-3", "process", "3 replicas on one wave, one killed mid-wave",
                 partial(process.replicas, count=3)),
        Scenario("own-node", "process", "spotq's own node interrupted", process.own_node),
        Scenario("poison-flood", "queue", "bad bodies with a few real warnings", queue.poison_flood,
                 sqs="elasticmq"),
        Scenario("soak", "soak", "steady random interruptions, RSS sampled", soak.soak),
    )
}  # fmt: skip
