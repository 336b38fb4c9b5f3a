"""`python -m bench.run --scale 200x20`: the mass-interruption benchmark, one command, figures as JSON + PNG.

For each scale (K nodes x P pods) on a fresh local control plane with kwok nodes:

  sqs       the SQS endpoint's own ceiling (ElasticMQ, and moto for comparison)
  spotq     K Spot warnings sent at once; per node enqueued → received → tainted+cordoned → drained,
            PDB lows, replacements Running, API requests (audit log), CPU, RSS, a py-spy profile
  kubectl   the same layout drained by `kubectl drain` ten at a time with NTH's flags
  ceiling   PDBs relaxed; a minimal eviction client evicts half the nodes' pods as fast as the API server
            takes them, then spotq drains the other half: spotq's share of the ceiling
and once per run: spotq's RSS with 5000 nodes in its index.

Every wait is bounded; see --help for the limits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat, profiling, sqs_endpoint, world
from bench.audit import AuditLog
from bench.contenders import KUBECTL_WORKERS, EvictionCeiling, KubectlDrains, MarkCeiling
from bench.observing import Observer
from bench.sqs_endpoint import SqsEndpoint
from bench.world import Layout, Scale, Workload
from testenv import LocalCluster
from testenv.spotq import SpotqProcess

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ["50x10", "200x20", "1000x5"]
# The profile of a wave's first seconds (receiving and marking), s.
FIRST = 6


def say(text: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)


# -- small statistics -------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def stats(values: Iterable[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "n": len(present),
        "p50": _round(percentile(present, 50)),
        "p99": _round(percentile(present, 99)),
        "max": _round(max(present) if present else None),
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# -- spotq ------------------------------------------------------------------------------------------------------


def spotq_env(endpoint: SqsEndpoint, queue_url: str, kubeconfig: Path) -> dict[str, str]:
    return {
        **endpoint.env(),
        "SPOTQ_QUEUE__URL": queue_url,
        "SPOTQ_KUBE__KUBECONFIG": str(kubeconfig),
        "SPOTQ_KUBE__NODE_SELECTOR": "lifecycle=Ec2Spot",
        "SPOTQ_LOG__FORMAT": "json",
    }


def metric_samples(spotq: SpotqProcess) -> dict[str, float]:
    _, text = spotq.get("/metrics")
    samples = {}
    for line in text.splitlines():
        if line.startswith("spotq_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


def read_spotq_log(path: Path) -> dict[str, dict[str, float]]:
    """instance → time of "notice received"; node → time of "node marked" / "drain finished"."""
    received: dict[str, float] = {}
    marked: dict[str, float] = {}
    drained: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        event = doc.get("event")
        stamp = datetime.fromisoformat(str(doc.get("time", "")).replace("Z", "+00:00")).timestamp()
        if event == "notice received":
            for instance in str(doc.get("instances", "")).split(","):
                received.setdefault(instance, stamp)
        elif event in ("node marked", "node already marked") and doc.get("node"):
            marked.setdefault(doc["node"], stamp)
        elif event in ("drain finished", "drain incomplete") and doc.get("node"):
            drained.setdefault(doc["node"], stamp)
    return {"received": received, "marked": marked, "drained": drained}


def wait_queue_empty(endpoint: SqsEndpoint, queue_url: str, timeout: float = 60.0) -> float | None:
    client = endpoint.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        if int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0:
            return time.time()
        time.sleep(0.5)
    return None


def wait_for(what: str, done: Callable[[], bool], timeout: float, progress: Callable[[], str] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    last = 0.0
    while time.monotonic() < deadline:
        if done():
            return True
        if progress is not None and time.monotonic() - last >= 10:
            last = time.monotonic()
            say(f"  {what}: {progress()}")
        time.sleep(0.5)
    say(f"  {what}: not reached within {timeout:.0f}s")
    return False


class Bench:
    def __init__(self, args: argparse.Namespace, scale: Scale, workdir: Path) -> None:
        self.args = args
        self.scale = scale
        self.workdir = workdir
        self.cluster: LocalCluster | None = None
        self.layout: Layout | None = None
        self.kubeconfigs: dict[str, Path] = {}
        self.audit: AuditLog | None = None
        self.endpoint: SqsEndpoint | None = None
        self.result: dict[str, Any] = {"scale": scale.label, "nodes": scale.nodes, "pods_per_node": scale.pods_per_node}

    # -- set-up -------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        started = time.monotonic()
        self.cluster = world.start_cluster(self.workdir)
        self.kubeconfigs = world.create_identities(self.cluster)
        self.audit = AuditLog(self.workdir / "audit.log")
        self.layout = Layout(self.cluster, self.scale, Workload(self.args.grace, self.args.max_unavailable))
        self.layout.create_nodes(say)
        self.result["cluster"] = {
            "remaining_nodes": len(self.layout.remaining),
            "deployments": self.scale.deployments,
            "grace_seconds": self.args.grace,
            "pdb_max_unavailable": self.args.max_unavailable,
            "pod_ready_delay_seconds": 1.0,
            "kwok_lease_seconds": 3600,
            "control_plane_start_seconds": round(self.cluster.startup_seconds, 1),
        }
        say(f"cluster set up in {time.monotonic() - started:.0f}s")

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
        if self.cluster is not None:
            self.cluster.stop(remove_workdir=not self.args.keep)

    # -- SQS ----------------------------------------------------------------------------------------------------

    def sqs_ceiling(self) -> None:
        messages = max(1000, self.scale.nodes)
        found = []
        if self.args.compare_moto:
            with sqs_endpoint.open_endpoint("moto", self.workdir) as moto:
                found.append(sqs_endpoint.measure_ceiling(moto, messages, time_limit=45))
        assert self.endpoint is not None
        found.append(sqs_endpoint.measure_ceiling(self.endpoint, messages, time_limit=60))
        for row in found:
            say(f"SQS ceiling {row['endpoint']}: send {row['send_per_second']}/s, receive+delete "
                f"{row['receive_delete_per_second']}/s ({row['received']}/{row['messages']} in "
                f"{row['receive_delete_seconds']}s)")  # fmt: skip
        self.result["sqs_ceiling"] = found

    # -- spotq --------------------------------------------------------------------------------------------------

    def run_spotq(self, nodes: list[str], phase: str, *, profile: bool) -> dict[str, Any]:
        """Send one warning per node at once and follow spotq until every node is drained and capacity is back."""
        assert self.cluster and self.layout and self.audit and self.endpoint
        cluster, layout, endpoint = self.cluster, self.layout, self.endpoint
        queue_url = endpoint.create_queue(f"spotq-{phase}")
        log_path = self.workdir / f"spotq-{phase}.log"
        settings = dict(item.split("=", 1) for item in self.args.spotq_setting)
        env = spotq_env(endpoint, queue_url, self.kubeconfigs["spotq"]) | settings
        spotq = SpotqProcess(env, log_path=log_path).start()
        observer = self._observer(nodes, world.SPOT_TAINT)
        instance_of = {n.node_name: n.instance_id for n in layout.spot}
        pids = self._pids() | {"spotq": spotq.process.pid if spotq.process else 0}
        sampler = procstat.Sampler(pids).start()
        before = metric_samples(spotq)
        api_before = cluster.apiserver_request_total()
        self.audit.mark()
        prof = profiling.Profile(pids["spotq"], self.workdir / f"profile-{phase}.txt") if profile else None
        # The wave's first seconds on their own: receiving and marking, before the drains.
        first = (
            profiling.Profile(pids["spotq"], self.workdir / f"profile-{phase}-first.txt", rate=100, duration=FIRST)
            if profile
            else None
        )
        bodies = [sqs_endpoint.spot_warning(instance_of[name]) for name in nodes]
        event_time = math.floor(time.time())  # the bodies carry whole seconds
        start = time.time()
        observer.begin(start)
        enqueued = sqs_endpoint.send_batched(endpoint, queue_url, bodies, senders=16)
        say(f"  {phase}: {len(nodes)} warnings enqueued in {max(enqueued) - start:.2f}s")

        def progress() -> str:
            snap = observer.snapshot()["nodes"].values()
            marked = sum(1 for t in snap if t["marked"] is not None)
            drained = sum(1 for t in snap if t["drained"] is not None)
            return f"marked {marked}/{len(nodes)}, drained {drained}/{len(nodes)}"

        def finished() -> bool:
            # Every node drained and capacity back; or spotq has settled every message while some nodes still
            # hold pods (their drains reached the deadline): nothing more will happen to those nodes.
            if observer.done():
                return True
            if time.time() - start < 20 or observer.all_drained():
                return False
            status, text = spotq.get("/metrics")  # a failed scrape (busy machine) must not read as idle
            return status == 200 and "\nspotq_messages_in_flight 0.0" in text

        wait_for(f"{phase} drains", finished, self.args.phase_timeout, progress)
        queue_empty = wait_queue_empty(endpoint, queue_url, timeout=60)
        profile_summary = prof.stop() if prof is not None else None
        if first is not None and profile_summary is not None:
            profile_summary["first_seconds"] = FIRST
            profile_summary["first"] = first.stop()
        sampler.stop()
        after = metric_samples(spotq)
        memory = procstat.memory_mb(pids["spotq"])
        api_after = cluster.apiserver_request_total()
        spotq.stop()
        time.sleep(2.5)  # the audit backend writes in batches (1 s) and the closed watches log on completion
        observer.stop()
        requests = self.audit.since_mark([world.user("spotq")])[world.user("spotq")]
        logged = read_spotq_log(log_path)
        snap = observer.snapshot()
        rows = []
        for name, stamp in zip(nodes, enqueued, strict=True):
            times = snap["nodes"][name]
            received = logged["received"].get(instance_of[name])
            rows.append(
                {
                    "node": name,
                    "pods": times["pods_at_start"],
                    "enqueued": stamp,
                    "received": received,
                    "marked": times["marked"],
                    "drained": times["drained"],
                    "logged_marked": logged["marked"].get(name),
                    "logged_drained": logged["drained"].get(name),
                }
            )
        evicted = int(after.get('spotq_evictions_total{result="evicted"}', 0))
        figures = self._figures(rows, start, event_time, snap, sampler, "spotq")
        figures.update(
            {
                "queue_empty_seconds": _round(queue_empty - start) if queue_empty else None,
                "evicted_pods": evicted,
                "requests": requests.as_dict(),
                "requests_per_evicted_pod": _round(requests.total / evicted) if evicted else None,
                "spotq_kube_requests": int(
                    sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("spotq_kube_requests_total"))
                ),
                "apiserver_requests_all_clients": int(api_after - api_before),
                "eviction_results": {
                    re.sub(r".*result=\"([^\"]+)\".*", r"\1", k): int(v - before.get(k, 0))
                    for k, v in after.items()
                    if k.startswith("spotq_evictions_total")
                },
                "eviction_rate_per_second": _round(requests.eviction_rate(), 1),
                "spotq_cpu_seconds": _round(sampler.cpu_used("spotq")),
                "spotq_peak_rss_mb": _round(sampler.peak_rss("spotq"), 1),
                "spotq_vmhwm_mb": _round(memory.get("VmHWM"), 1),
                "profile": profile_summary,
                "rows": rows,
            }
        )
        return figures

    def _pids(self) -> dict[str, int]:
        assert self.cluster and self.endpoint
        return {
            "kube-apiserver": self.cluster.apiserver_pid,
            "etcd": self.cluster.etcd_pid,
            "kwok": self.cluster.kwok_pid,
            "kube-controller-manager": self.cluster.controller_manager_pid,
            "kube-scheduler": self.cluster.scheduler_pid,
            "sqs": self.endpoint.pid,
        }

    def _observer(self, nodes: list[str], taint: str | None) -> Observer:
        assert self.cluster and self.cluster.pki and self.layout
        pki = self.cluster.pki
        return Observer(
            server_url=self.cluster.server_url,
            ca=pki.ca_cert,
            cert=pki.admin_cert,
            key=pki.admin_key,
            namespace=world.NAMESPACE,
            interrupted=set(nodes),
            taint_key=taint,
            min_available=self.layout.workload.min_available(),
            wanted_pods=self.scale.pods,
        ).start()

    def _figures(
        self,
        rows: list[dict[str, Any]],
        start: float,
        event_time: float,
        snap: dict[str, Any],
        sampler: procstat.Sampler,
        who: str,
    ) -> dict[str, Any]:
        def since(key: str, origin: str = "enqueued") -> list[float | None]:
            return [r[key] - r[origin] if r.get(key) is not None and r.get(origin) is not None else None for r in rows]

        drained = [r["drained"] for r in rows]
        all_drained = max(drained) - start if drained and None not in drained else None
        within = sum(1 for d in drained if d is not None and d - event_time <= 120)
        within_60 = sum(1 for d in drained if d is not None and d - event_time <= 60)
        pdb_violations = sum(p["violations"] for p in snap["pdbs"].values())
        margins = [p["lowest_margin"] for p in snap["pdbs"].values() if p["lowest_margin"] is not None]
        deployment_short = {
            name: d
            for name, d in snap["deployments"].items()
            if d["lowest_ready"] is not None and d["lowest_ready"] < d["min_available"]
        }
        capacity = snap["capacity"]
        first_replacement = next((t for t, c in capacity if c > 0), None)
        cpu = {name: _round(sampler.cpu_used(name), 1) for name in sampler.pids}
        marked = [r["marked"] for r in rows if r["marked"] is not None]
        return {
            "nodes": len(rows),
            "marked": sum(1 for r in rows if r["marked"] is not None),
            "drained": sum(1 for d in drained if d is not None),
            "enqueue_spread_seconds": _round(max(r["enqueued"] for r in rows) - start),
            "enqueued_to_received": stats(since("received")),
            "received_to_marked": stats(since("marked", "received")),
            "enqueued_to_marked": stats(since("marked")),
            "enqueued_to_drained": stats(since("drained")),
            # First warning sent → last node tainted+cordoned: nodes per second, against the minimal client's.
            "mark_rate_per_second": _round(len(marked) / (max(marked) - start), 1) if marked else None,
            "all_drained_seconds": _round(all_drained),
            "drained_within_120s_of_event": within,
            "drained_within_60s_of_event": within_60,
            "share_drained_within_120s": _round(within / len(rows), 3),
            "pdb_violations": pdb_violations,
            "pdb_lowest_margin": min(margins) if margins else None,
            "deployments_below_min_available": deployment_short,
            "first_replacement_ready_seconds": _round(first_replacement - start) if first_replacement else None,
            "capacity_restored_seconds": _round(snap["capacity_restored"] - start)
            if snap["capacity_restored"]
            else None,
            "cpu_seconds": cpu,
            "load_average_after": round(procstat.load_average(), 2),
            "timeline": {
                "capacity": [(round(t - start, 2), c) for t, c in capacity[:: max(1, len(capacity) // 2000)]],
            },
            "watch_errors": snap["watch_errors"],
            "who": who,
        }

    # -- kubectl ------------------------------------------------------------------------------------------------

    def run_kubectl(self) -> dict[str, Any]:
        assert self.cluster and self.layout and self.audit
        nodes = self.layout.spot_names
        observer = self._observer(nodes, None)
        drains = KubectlDrains(
            self.kubeconfigs["kubectl-drain"], self.workdir / "kubectl-cache", nodes, time_limit=self.args.kubectl_limit
        )
        drains.warm_up()
        sampler = procstat.Sampler(self._pids()).start()
        self.audit.mark()
        start = time.time()
        observer.begin(start)
        runner = threading.Thread(target=drains.run, name="kubectl drains", daemon=True)
        runner.start()

        def progress() -> str:
            return f"started {len(drains.started)}/{len(nodes)}, finished {len(drains.finished)}"

        wait_for("kubectl drains", lambda: not runner.is_alive(), self.args.kubectl_limit + 300, progress)
        started = [n for n in nodes if n in drains.started]
        wait_for(
            "kubectl capacity",
            lambda: observer.all_drained() or not drains.not_started,
            60,
        )
        if not drains.not_started:
            wait_for("kubectl capacity", lambda: observer.capacity_restored is not None, 120)
        sampler.stop()
        time.sleep(2.5)
        observer.stop()
        requests = self.audit.since_mark([world.user("kubectl-drain")])[world.user("kubectl-drain")]
        snap = observer.snapshot()
        rows = [
            {
                "node": name,
                "pods": snap["nodes"][name]["pods_at_start"],
                "enqueued": start,
                "received": drains.started.get(name),
                "marked": snap["nodes"][name]["marked"],
                "drained": snap["nodes"][name]["drained"],
                "kubectl_finished": drains.finished.get(name),
                "exit_code": drains.exit_codes.get(name),
            }
            for name in nodes
        ]
        figures = self._figures(rows, start, math.floor(start), snap, sampler, "kubectl")
        done = [r["drained"] for r in rows if r["drained"] is not None]
        figures["started_nodes"] = len(started)
        figures["failed_drains"] = {n: e for n, e in list(drains.errors.items())[:10]}
        evicted = sum(r["pods"] for r in rows if r["drained"] is not None)
        figures["requests"] = requests.as_dict()
        figures["evicted_pods"] = evicted
        figures["requests_per_evicted_pod"] = _round(requests.total / evicted) if evicted else None
        if drains.not_started and done:
            elapsed = max(done) - start
            figures["projected_all_drained_seconds"] = _round(elapsed * len(nodes) / len(done))
            figures["projection"] = (
                f"stopped after {self.args.kubectl_limit:.0f}s: {len(done)}/{len(nodes)} nodes drained in "
                f"{elapsed:.0f}s; all-drained projected at the same rate"
            )
        figures["rows"] = rows
        return figures

    # -- eviction ceiling ---------------------------------------------------------------------------------------

    def run_ceiling(self) -> dict[str, Any]:
        """Half the nodes' pods evicted by a minimal client, the other half drained by spotq; PDBs allow all."""
        assert self.cluster and self.layout and self.audit and self.cluster.pki
        nodes = self.layout.spot_names
        half_client, half_spotq = nodes[0::2], nodes[1::2]
        pods = world.pod_names_on(self.cluster, half_client)
        token = re.search(r'token: "([^"]+)"', self.kubeconfigs["evict-ceiling"].read_text())
        assert token is not None
        client = EvictionCeiling(
            self.cluster.server_url, self.cluster.pki.ca_cert, token.group(1), world.NAMESPACE,
            lanes=self.args.ceiling_lanes, time_limit=120,
        )  # fmt: skip
        # Taint+cordon as any drain would (replacements must land elsewhere), by a minimal client at full speed.
        marker = MarkCeiling(
            self.cluster.server_url, self.cluster.pki.ca_cert, token.group(1), world.SPOT_TAINT,
            in_flight=self.args.mark_ceiling_in_flight,
        )  # fmt: skip
        marker.run(half_client)
        say(f"  mark ceiling: {marker.done}/{len(half_client)} nodes tainted+cordoned in {marker.seconds:.2f}s "
            f"({marker.rate or 0:.0f}/s, {marker.in_flight} in flight, {marker.errors} errors)")  # fmt: skip
        self.audit.mark()
        client.run(pods)
        time.sleep(2.5)
        requests = self.audit.since_mark([world.user("evict-ceiling")])[world.user("evict-ceiling")]
        ceiling = requests.eviction_rate()
        say(f"  ceiling: {client.accepted}/{len(pods)} evictions in {client.seconds:.1f}s "
            f"({ceiling or 0:.0f}/s by the audit log, {client.refused} refused)")  # fmt: skip
        # Let the evicted pods go and their replacements start before spotq's turn, so both meet a quiet cluster.
        client_ready = self._wait_pods_gone(half_client, 120)
        spotq = self.run_spotq(half_spotq, "ceiling", profile=False)
        share = (spotq["eviction_rate_per_second"] or 0) / ceiling if ceiling else None
        spotq.pop("rows", None)
        return {
            "marks": {
                "nodes": len(half_client),
                "done": marker.done,
                "errors": marker.errors,
                "in_flight": marker.in_flight,
                "seconds": round(marker.seconds, 2),
                "rate_per_second": _round(marker.rate, 1),
            },
            "client": {
                "pods": len(pods),
                "accepted": client.accepted,
                "refused": client.refused,
                "errors": client.errors,
                "seconds": round(client.seconds, 2),
                "lanes_per_budget": self.args.ceiling_lanes,
                "rate_per_second": _round(ceiling, 1),
                "requests": requests.as_dict(),
                "pods_gone_before_spotq": client_ready,
            },
            "spotq": spotq,
            "spotq_share": _round(share, 3),
        }

    def _wait_pods_gone(self, nodes: list[str], timeout: float) -> bool:
        assert self.cluster
        wanted = set(nodes)

        def gone() -> bool:
            pods = self.cluster.list_pods(world.NAMESPACE) if self.cluster else []
            on_nodes = any(p["spec"].get("nodeName") in wanted for p in pods)
            ready = sum(1 for p in pods if _pod_ready(p))
            return not on_nodes and ready >= self.scale.pods

        return wait_for("ceiling pods gone and replaced", gone, timeout)

    # -- the whole scale ----------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.setup()
        assert self.layout
        self.endpoint = sqs_endpoint.open_endpoint(self.args.sqs, self.workdir)
        self.endpoint.start()
        self.sqs_ceiling()
        self.result["load_average_before"] = round(procstat.load_average(), 2)
        self.layout.lay_out(say)
        say(f"phase spotq: {self.scale.nodes} warnings at once (load {procstat.load_average():.2f})")
        self.result["spotq"] = self.run_spotq(self.layout.spot_names, "spotq", profile=self.args.profile)
        report_phase("spotq", self.result["spotq"])
        if self.args.kubectl:
            self.layout.lay_out(say)
            say(f"phase kubectl: kubectl drain x{KUBECTL_WORKERS} (load {procstat.load_average():.2f})")
            self.result["kubectl"] = self.run_kubectl()
            report_phase("kubectl", self.result["kubectl"])
        if self.args.ceiling:
            self.layout.lay_out(say, max_unavailable="100%")
            say(f"phase ceiling (load {procstat.load_average():.2f})")
            self.result["ceiling"] = self.run_ceiling()
            share = self.result["ceiling"]["spotq_share"]
            say(f"  spotq evicted at {self.result['ceiling']['spotq']['eviction_rate_per_second']}/s = "
                f"{share} of the ceiling")  # fmt: skip
        return self.result


def _pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        not pod["metadata"].get("deletionTimestamp")
        and status.get("phase") == "Running"
        and any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    )


def report_phase(name: str, f: dict[str, Any]) -> None:
    say(
        f"  {name}: marked {f['marked']}/{f['nodes']}, drained {f['drained']}/{f['nodes']}, "
        f"enqueued→marked p50/p99 {f['enqueued_to_marked']['p50']}/{f['enqueued_to_marked']['p99']}s, "
        f"all drained {f['all_drained_seconds']}s, within 120s {f['share_drained_within_120s']}, "
        f"PDB violations {f['pdb_violations']}, requests/pod {f.get('requests_per_evicted_pod')}"
    )


# -- index RSS --------------------------------------------------------------------------------------------------


def index_rss(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """spotq's memory with `args.index_nodes` nodes: RSS on an empty cluster, after the nodes arrive by watch,
    and (a fresh process) after listing them at start; VmHWM is the kernel's peak."""
    result: dict[str, Any] = {"nodes": args.index_nodes}
    cluster = LocalCluster(workdir=workdir / "index-cluster", verbose=False, keep_workdir=args.keep)
    cluster.start()
    endpoint = sqs_endpoint.open_endpoint(args.sqs, workdir / "index")
    try:
        endpoint.start()
        queue_url = endpoint.create_queue("index")
        env = spotq_env(endpoint, queue_url, cluster.kubeconfig_path)
        with SpotqProcess(env, log_path=workdir / "spotq-index-empty.log") as spotq:
            assert spotq.process
            time.sleep(2)
            result["empty_cluster"] = procstat.memory_mb(spotq.process.pid)
            started = time.monotonic()
            world.create_index_nodes(cluster, args.index_nodes)
            result["create_seconds"] = round(time.monotonic() - started, 1)
            wait_for("index by watch", lambda: spotq.metric("spotq_nodes_indexed") >= args.index_nodes, 120)
            time.sleep(2)
            result["after_watch"] = procstat.memory_mb(spotq.process.pid)
        with SpotqProcess(env, log_path=workdir / "spotq-index-list.log") as spotq:
            assert spotq.process
            wait_for("index by list", lambda: spotq.metric("spotq_nodes_indexed") >= args.index_nodes, 120)
            time.sleep(2)
            result["after_list"] = procstat.memory_mb(spotq.process.pid)
            result["indexed"] = int(spotq.metric("spotq_nodes_indexed"))
    finally:
        endpoint.stop()
        cluster.stop()
    say(f"index RSS with {result.get('indexed')} nodes: {result['after_list']} (empty cluster "
        f"{result['empty_cluster']}, after watch {result['after_watch']})")  # fmt: skip
    return result


# -- output -----------------------------------------------------------------------------------------------------


def table(results: list[dict[str, Any]], index: dict[str, Any] | None, host: dict[str, Any]) -> str:
    """The Markdown figures table (one column per scale)."""

    def cell(scale: dict[str, Any], path: str, fmt: str = "{}") -> str:
        value: Any = scale
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                return "-"
        return fmt.format(value)

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("nodes interrupted together x pods per node", lambda s: f"{s['nodes']} x {s['pods_per_node']}"),
        ("tainted + cordoned", lambda s: f"{cell(s, 'spotq.marked')}/{s['nodes']}"),
        ("enqueued → received p50 / p99 / max, s", lambda s: _triple(s, "spotq.enqueued_to_received")),
        ("received → tainted+cordoned p50 / p99 / max, s", lambda s: _triple(s, "spotq.received_to_marked")),
        ("enqueued → tainted+cordoned p50 / p99 / max, s", lambda s: _triple(s, "spotq.enqueued_to_marked")),
        ("enqueued → drained p50 / p99 / max, s", lambda s: _triple(s, "spotq.enqueued_to_drained")),
        ("drained within 60 s / 120 s of event time",
         lambda s: f"{cell(s, 'spotq.drained_within_60s_of_event')} / {cell(s, 'spotq.drained_within_120s_of_event')}"
         f" of {s['nodes']}"),
        ("PDB violations (lowest currentHealthy - desiredHealthy)",
         lambda s: f"{cell(s, 'spotq.pdb_violations')} ({cell(s, 'spotq.pdb_lowest_margin')})"),
        ("all replacements Ready on remaining nodes, s", lambda s: cell(s, "spotq.capacity_restored_seconds")),
        ("workload pods Ready elsewhere at +120 s: spotq / kubectl x10", lambda s: _ready_at(s, 120)),
        ("API requests per evicted pod (audit log)", lambda s: cell(s, "spotq.requests_per_evicted_pod")),
        ("spotq CPU seconds / peak RSS MB", lambda s: f"{cell(s, 'spotq.spotq_cpu_seconds')} / "
         f"{cell(s, 'spotq.spotq_vmhwm_mb')}"),
        ("kubectl drain x10: all drained, s", lambda s: _kubectl_all(s)),
        ("kubectl drain x10: drained within 120 s of event",
         lambda s: f"{cell(s, 'kubectl.drained_within_120s_of_event')} of {s['nodes']}"),
        ("kubectl drain x10: API requests per evicted pod", lambda s: cell(s, "kubectl.requests_per_evicted_pod")),
        ("spotq faster than kubectl x10 (all drained)", lambda s: cell(s, "ratio_vs_kubectl", "{:.1f}x")),
        ("nodes drained within 120 s of event: spotq / kubectl x10", lambda s: _within_ratio(s)),
        ("taint+cordon ceiling (minimal client), nodes/s", lambda s: cell(s, "ceiling.marks.rate_per_second")),
        ("spotq taint+cordon rate (first warning sent → last node marked), nodes/s",
         lambda s: cell(s, "spotq.mark_rate_per_second")),
        ("eviction ceiling (minimal client), evictions/s", lambda s: cell(s, "ceiling.client.rate_per_second")),
        ("spotq eviction rate, evictions/s (share of ceiling)",
         lambda s: f"{cell(s, 'ceiling.spotq.eviction_rate_per_second')} ({cell(s, 'ceiling.spotq_share', '{:.0%}')})"),
        ("SQS receive+delete ceiling, msg/s (ElasticMQ / moto)", lambda s: _sqs(s)),
    ]  # fmt: skip
    lines = ["| figure | " + " | ".join(r["scale"] for r in results) + " |", "|---|" + "---|" * len(results)]
    for title, fn in rows:
        lines.append(f"| {title} | " + " | ".join(fn(r) for r in results) + " |")
    if index:
        mb = index.get("after_list", {})
        lines.append(
            f"\nspotq RSS with {index.get('indexed')} nodes indexed: {mb.get('VmRSS', 0):.0f} MB "
            f"(peak {mb.get('VmHWM', 0):.0f} MB; {index['empty_cluster'].get('VmRSS', 0):.0f} MB on an empty cluster)"
        )
    lines.append(
        f"\nMachine: {host['nproc']} cores ({host['cpu_model']}), {host['memory_gib']} GiB, Python {host['python']}."
    )
    return "\n".join(lines)


def _within_ratio(scale: dict[str, Any]) -> str:
    spotq = (scale.get("spotq") or {}).get("drained_within_120s_of_event")
    kubectl = (scale.get("kubectl") or {}).get("drained_within_120s_of_event")
    if spotq is None or not kubectl:
        return "-"
    return f"{spotq / kubectl:.1f}x"


def _ready_at(scale: dict[str, Any], seconds: float) -> str:
    """Share of the workload's pods Running+Ready on the remaining nodes `seconds` after the warnings."""
    wanted = scale["nodes"] * scale["pods_per_node"]
    parts = []
    for phase in ("spotq", "kubectl"):
        points = ((scale.get(phase) or {}).get("timeline") or {}).get("capacity") or []
        before = [count for t, count in points if t <= seconds]
        parts.append(f"{before[-1] / wanted:.0%}" if before else "-")
    return " / ".join(parts)


def _triple(scale: dict[str, Any], path: str) -> str:
    phase, key = path.split(".")
    s = (scale.get(phase) or {}).get(key) or {}
    return " / ".join("-" if s.get(q) is None else f"{s[q]:.2f}" for q in ("p50", "p99", "max"))


def _kubectl_all(scale: dict[str, Any]) -> str:
    k = scale.get("kubectl") or {}
    if k.get("all_drained_seconds") is not None:
        return f"{k['all_drained_seconds']:.0f}"
    if k.get("projected_all_drained_seconds") is not None:
        return f"~{k['projected_all_drained_seconds']:.0f} (projected)"
    return "-"


def _sqs(scale: dict[str, Any]) -> str:
    rows = {r["endpoint"]: r for r in scale.get("sqs_ceiling") or []}
    parts = [str((rows.get(name) or {}).get("receive_delete_per_second", "-")) for name in ("elasticmq", "moto")]
    return " / ".join(parts)


def saved_results(out: Path) -> list[dict[str, Any]]:
    """Every scale's latest JSON in `out`, smallest first, so the table shows what is there."""
    found = [json.loads(p.read_text()) for p in out.glob("[0-9]*x[0-9]*.json")]
    return sorted(found, key=lambda r: (r["nodes"] * r["pods_per_node"], r["nodes"]))


def finish(result: dict[str, Any]) -> None:
    spotq_all = (result.get("spotq") or {}).get("all_drained_seconds")
    k = result.get("kubectl") or {}
    kubectl_all = k.get("all_drained_seconds") or k.get("projected_all_drained_seconds")
    if spotq_all and kubectl_all:
        result["ratio_vs_kubectl"] = round(kubectl_all / spotq_all, 2)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--scale", action="append", help="K or KxP (nodes x pods per node; P defaults to 10)")
    parser.add_argument("--all", action="store_true", help=f"run {', '.join(PRESETS)}")
    parser.add_argument("--sqs", default="elasticmq", choices=["elasticmq", "moto"])
    parser.add_argument("--no-moto", dest="compare_moto", action="store_false", help="skip moto's SQS ceiling")
    parser.add_argument("--grace", type=int, default=30, help="pods' terminationGracePeriodSeconds")
    parser.add_argument("--max-unavailable", default="20%", help="each PDB's maxUnavailable")
    parser.add_argument("--no-kubectl", dest="kubectl", action="store_false")
    parser.add_argument("--kubectl-limit", type=float, default=900.0, help="start no kubectl drain after this, s")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false")
    parser.add_argument("--ceiling-lanes", type=int, default=4, help="ceiling client: evictions in flight per PDB")
    parser.add_argument(
        "--mark-ceiling-in-flight", type=int, default=64, help="taint+cordon ceiling client: PATCHes in flight"
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument(
        "--spotq-setting", action="append", default=[], metavar="SPOTQ_GROUP__NAME=VALUE",
        help="a spotq setting for the runs (repeatable), e.g. SPOTQ_QUEUE__RECEIVERS=8",
    )  # fmt: skip
    parser.add_argument("--index-nodes", type=int, default=5000, help="nodes for the RSS measurement (0: skip)")
    parser.add_argument("--phase-timeout", type=float, default=300.0, help="longest wait for one spotq phase, s")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit log)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # A SIGTERM (timeout, CI) must still stop the cluster and ElasticMQ: let it unwind like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    scales = [Scale.parse(s) for s in (PRESETS if args.all else (args.scale or ["50x10"]))]
    host = machine()
    say(f"machine: {host['nproc']} cores, {host['cpu_model']}, load {procstat.load_average():.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    workroot = Path(tempfile.mkdtemp(prefix="spotq-bench-"))
    results = []
    try:
        for scale in scales:
            say(f"=== scale {scale.label} ===")
            bench = Bench(args, scale, workroot / scale.label)
            try:
                result = bench.run()
            finally:
                bench.close()
            finish(result)
            result["machine"] = host
            result["finished_at"] = datetime.now(UTC).isoformat()
            results.append(result)
            (args.out / f"{scale.label}.json").write_text(json.dumps(result, indent=1, default=str))
            try:
                from bench import plot

                plot.timeline(result, args.out / f"{scale.label}.png")
            except ImportError as exc:
                say(f"no plot ({exc}); pip install matplotlib")
        index = index_rss(args, workroot) if args.index_nodes else None
        if index:
            (args.out / "index-rss.json").write_text(json.dumps(index, indent=1))
        elif (args.out / "index-rss.json").exists():
            index = json.loads((args.out / "index-rss.json").read_text())
        summary = table(saved_results(args.out), index, host)
        print("\n" + summary)
        (args.out / "summary.md").write_text(summary + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            say(f"work directory kept: {workroot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
