"""What the benchmark reads from spotq itself, beside what it watches in the cluster: the settings it runs spotq
with, its Prometheus metrics (/metrics), its records on the nodes (spotq.io/* annotations), and the one log event
no metric or record can replace (the receipt time of each notice, per instance).

phases.py uses these; the node watch (observing.py) and the audit log (audit.py) remain the independent witnesses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from bench import world
from bench.sqs_endpoint import SqsEndpoint
from testenv import LocalCluster
from testenv.spotq import SpotqProcess

# spotq's log event for a notice parsed and about to be acted on (spotq/handling.py); its `instances` field lists
# the notice's instance ids. Metrics have no instance label by design, so per-instance receipt times come from here.
NOTICE_RECEIVED = "notice received"
# spotq's annotations on a node: its record of a Spot warning (JSON with `noticed_at`) and its drain's state. Named
# here, not imported, so the benchmark reads spotq from outside as an operator would.
SPOT_RECORD = f"{world.TAINT_PREFIX}/spot-interruption"
DRAIN_RECORD = f"{world.TAINT_PREFIX}/drain"


def spotq_env(endpoint: SqsEndpoint, queue_url: str, kubeconfig: Path) -> dict[str, str]:
    return {
        **endpoint.env(),
        "SPOTQ_QUEUE__URL": queue_url,
        "SPOTQ_KUBE__KUBECONFIG": str(kubeconfig),
        "SPOTQ_KUBE__NODE_SELECTOR": "lifecycle=Ec2Spot",
        "SPOTQ_LOG__FORMAT": "json",
    }


def metric_samples(spotq: SpotqProcess) -> dict[str, float] | None:
    """Every `spotq_` sample by its full name with labels; None when the scrape failed (a busy machine)."""
    status, text = spotq.get("/metrics")
    if status != 200:
        return None
    samples = {}
    for line in text.splitlines():
        if line.startswith("spotq_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


def idle(spotq: SpotqProcess) -> bool:
    """spotq holds no message unsettled; a failed scrape does not read as idle."""
    samples = metric_samples(spotq)
    return samples is not None and samples.get("spotq_messages_in_flight") == 0


def counted_since(before: dict[str, float], after: dict[str, float], name: str) -> dict[str, int]:
    """The increase of each sample of counter `name` (by its label text) between two scrapes."""
    return {k: int(v - before.get(k, 0)) for k, v in after.items() if k.startswith(name)}


def received_times(log_path: Path) -> dict[str, float]:
    """instance → time spotq logged NOTICE_RECEIVED for it (the first time: redeliveries are later)."""
    received: dict[str, float] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") != NOTICE_RECEIVED:
            continue
        stamp = datetime.fromisoformat(str(doc.get("time", "")).replace("Z", "+00:00")).timestamp()
        for instance in str(doc.get("instances", "")).split(","):
            received.setdefault(instance, stamp)
    return received


def node_records(cluster: LocalCluster, nodes: Iterable[str]) -> dict[str, dict[str, object]]:
    """node → what spotq recorded on it: when it noticed the warning (its own clock, as it marked the node) and
    the drain's final state (finished, timed-out, blocked; None if never drained)."""
    found: dict[str, dict[str, object]] = {}
    for name in nodes:
        node = cluster.get_node(name) or {}
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        noticed_at = None
        try:
            record = json.loads(annotations.get(SPOT_RECORD) or "{}")
            noticed_at = datetime.fromisoformat(record["noticed_at"]).timestamp()
        except (ValueError, KeyError, TypeError):
            pass
        found[name] = {"noticed_at": noticed_at, "drain": annotations.get(DRAIN_RECORD)}
    return found
