"""The phases of one scale, in order: set up the cluster and the layout, the SQS endpoint's ceiling, spotq's wave,
`kubectl drain` x10, the API server's own ceilings with spotq's share; and once per run spotq's RSS with many nodes
indexed. Each phase returns its figures (figures.py) as a dict; report.py renders them, run.py is the CLI.

Every wait is bounded (the limits are the CLI's options).
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import figures, nth_build, nth_phase, procstat, profiling, report, spotq_signals, sqs_endpoint, world
from bench.audit import AuditLog
from bench.console import say
from bench.contenders import KUBECTL_WORKERS, EvictionCeiling, KubectlDrains, MarkCeiling
from bench.figures import rounded
from bench.observing import Observer
from bench.sqs_endpoint import SqsEndpoint
from bench.waiting import wait_for, wait_queue_empty
from bench.world import Layout, Scale, Workload
from testenv import LocalCluster
from testenv.aws import MotoServer
from testenv.spotq import SpotqProcess

# The profile of a wave's first seconds (receiving and marking), s.
FIRST = 6


class ScaleRun:
    """One scale on its own fresh control plane: every phase in order (`run`), then `close`."""

    def __init__(
        self, args: argparse.Namespace, scale: Scale, workdir: Path, nth: nth_build.Build | None = None
    ) -> None:
        self.args = args
        self.nth_build = nth  # started in the background at the beginning of the run; None: no NTH phases
        self.scale = scale
        self.workdir = workdir
        self.cluster: LocalCluster | None = None
        self.layout: Layout | None = None
        self.kubeconfigs: dict[str, Path] = {}
        self.audit: AuditLog | None = None
        self.endpoint: SqsEndpoint | None = None
        self.nth_moto: MotoServer | None = None  # EC2 for NTH's DescribeInstances, started for its first phase
        self._nth_binary: Path | None = None
        self._nth_checked = False
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
        if self.nth_moto is not None:
            self.nth_moto.stop()
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
        env = spotq_signals.spotq_env(endpoint, queue_url, self.kubeconfigs["spotq"]) | settings
        spotq = SpotqProcess(env, log_path=log_path).start()
        observer = self.observer(nodes, world.SPOT_TAINT)
        instance_of = {n.node_name: n.instance_id for n in layout.spot}
        pids = self.pids() | {"spotq": spotq.process.pid if spotq.process else 0}
        sampler = procstat.Sampler(pids).start()
        before = spotq_signals.metric_samples(spotq) or {}
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

        def finished() -> bool:
            # Every node drained and capacity back; or spotq has settled every message while some nodes still
            # hold pods (their drains reached the deadline): nothing more will happen to those nodes.
            if observer.done():
                return True
            if time.time() - start < 20 or observer.all_drained():
                return False
            return spotq_signals.idle(spotq)

        wait_for(f"{phase} drains", finished, self.args.phase_timeout, observer.progress)
        queue_empty = wait_queue_empty(endpoint, queue_url, timeout=60)
        profile_summary = prof.stop() if prof is not None else None
        if first is not None and profile_summary is not None:
            profile_summary["first_seconds"] = FIRST
            profile_summary["first"] = first.stop()
        sampler.stop()
        after = spotq_signals.metric_samples(spotq) or {}
        memory = procstat.memory_mb(pids["spotq"])
        api_after = cluster.apiserver_request_total()
        spotq.stop()
        time.sleep(2.5)  # the audit backend writes in batches (1 s) and the closed watches log on completion
        observer.stop()
        requests = self.audit.since_mark([world.user("spotq")])[world.user("spotq")]
        received_at = spotq_signals.received_times(log_path)
        recorded = spotq_signals.node_records(cluster, nodes)
        snap = observer.snapshot()
        # Marked when spotq's write returned (the audit log); the watch's sighting is kept beside it.
        marked_at = requests.marked_at(world.SPOT_TAINT)
        rows = []
        for name, stamp in zip(nodes, enqueued, strict=True):
            times = snap["nodes"][name]
            received = received_at.get(instance_of[name])
            rows.append(
                {
                    "node": name,
                    "pods": times["pods_at_start"],
                    "enqueued": stamp,
                    "received": received,
                    "marked": marked_at.get(name, times["marked"]),
                    "marked_seen": times["marked"],
                    "drained": times["drained"],
                    "recorded_noticed": recorded[name]["noticed_at"],
                    "recorded_drain": recorded[name]["drain"],
                }
            )
        evicted = int(after.get('spotq_evictions_total{result="evicted"}', 0))
        found = figures.phase(rows, start, event_time, snap, sampler, "spotq")
        found["deadline"] = self.deadline(rows, requests.evicted_at, event_time, snap, start)
        found.update(
            {
                "queue_empty_seconds": rounded(queue_empty - start) if queue_empty else None,
                "evicted_pods": evicted,
                "requests": requests.as_dict(),
                "requests_per_evicted_pod": rounded(requests.total / evicted) if evicted else None,
                "spotq_kube_requests": sum(
                    spotq_signals.counted_since(before, after, "spotq_kube_requests_total").values()
                ),
                "apiserver_requests_all_clients": int(api_after - api_before),
                "eviction_results": {
                    re.sub(r".*result=\"([^\"]+)\".*", r"\1", k): n
                    for k, n in spotq_signals.counted_since(before, after, "spotq_evictions_total").items()
                },
                "eviction_rate_per_second": rounded(requests.eviction_rate(), 1),
                "spotq_cpu_seconds": rounded(sampler.cpu_used("spotq")),
                "spotq_peak_rss_mb": rounded(sampler.peak_rss("spotq"), 1),
                "spotq_vmhwm_mb": rounded(memory.get("VmHWM"), 1),
                "spotq_rss_curve_mb": sampler.rss_curve("spotq", start),
                "profile": profile_summary,
                "rows": rows,
            }
        )
        return found

    def deadline(
        self,
        rows: list[dict[str, Any]],
        evicted_at: dict[str, float],
        event_time: float,
        snap: dict[str, Any],
        start: float,
    ) -> dict[str, Any]:
        """figures.deadline for a phase: the interrupted nodes' pods against event time + 120 s."""
        pods = sum(int(r["pods"]) for r in rows)
        return figures.deadline(evicted_at, pods, event_time, self.args.grace, snap["on_interrupted"], start)

    def nth_binary(self) -> Path | None:
        """NTH's binary once its background build is done; None (said once, with why) if it cannot run here."""
        if self._nth_checked or self.nth_build is None:
            return self._nth_binary
        self._nth_checked = True
        binary = self.nth_build.wait()
        reason = nth_phase.why_not_run()
        if binary is not None and reason is not None:
            say(f"NTH skipped: {reason}")
            binary = None
        self._nth_binary = binary
        return binary

    def pids(self) -> dict[str, int]:
        assert self.cluster and self.endpoint
        return {
            "kube-apiserver": self.cluster.apiserver_pid,
            "etcd": self.cluster.etcd_pid,
            "kwok": self.cluster.kwok_pid,
            "kube-controller-manager": self.cluster.controller_manager_pid,
            "kube-scheduler": self.cluster.scheduler_pid,
            "sqs": self.endpoint.pid,
        }

    def observer(self, nodes: list[str], taint: str | None) -> Observer:
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

    # -- kubectl ------------------------------------------------------------------------------------------------

    def run_kubectl(self) -> dict[str, Any]:
        assert self.cluster and self.layout and self.audit
        nodes = self.layout.spot_names
        observer = self.observer(nodes, None)
        drains = KubectlDrains(
            self.kubeconfigs["kubectl-drain"], self.workdir / "kubectl-cache", nodes, time_limit=self.args.kubectl_limit
        )
        drains.warm_up()
        sampler = procstat.Sampler(self.pids()).start()
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
        marked_at = requests.marked_at(None)  # kubectl drain cordons, it does not taint
        rows = [
            {
                "node": name,
                "pods": snap["nodes"][name]["pods_at_start"],
                "enqueued": start,
                "received": drains.started.get(name),
                "marked": marked_at.get(name, snap["nodes"][name]["marked"]),
                "marked_seen": snap["nodes"][name]["marked"],
                "drained": snap["nodes"][name]["drained"],
                "kubectl_finished": drains.finished.get(name),
                "exit_code": drains.exit_codes.get(name),
            }
            for name in nodes
        ]
        found = figures.phase(rows, start, math.floor(start), snap, sampler, "kubectl")
        found["deadline"] = self.deadline(rows, requests.evicted_at, math.floor(start), snap, start)
        found["started_nodes"] = len(started)
        found["failed_drains"] = {n: e for n, e in list(drains.errors.items())[:10]}
        evicted = sum(r["pods"] for r in rows if r["drained"] is not None)
        found["requests"] = requests.as_dict()
        found["evicted_pods"] = evicted
        found["requests_per_evicted_pod"] = rounded(requests.total / evicted) if evicted else None
        found.update(figures.projected_all_drained(rows, start, self.args.kubectl_limit, len(drains.not_started)))
        found["rows"] = rows
        return found

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
                "rate_per_second": rounded(marker.rate, 1),
            },
            "client": {
                "pods": len(pods),
                "accepted": client.accepted,
                "refused": client.refused,
                "errors": client.errors,
                "seconds": round(client.seconds, 2),
                "lanes_per_budget": self.args.ceiling_lanes,
                "rate_per_second": rounded(ceiling, 1),
                "requests": requests.as_dict(),
                "pods_gone_before_spotq": client_ready,
            },
            "spotq": spotq,
            "spotq_share": rounded(share, 3),
        }

    def _wait_pods_gone(self, nodes: list[str], timeout: float) -> bool:
        assert self.cluster
        wanted = set(nodes)

        def gone() -> bool:
            pods = self.cluster.list_pods(world.NAMESPACE) if self.cluster else []
            on_nodes = any(p["spec"].get("nodeName") in wanted for p in pods)
            ready = sum(1 for p in pods if pod_ready(p))
            return not on_nodes and ready >= self.scale.pods

        return wait_for("ceiling pods gone and replaced", gone, timeout)

    # -- the whole scale ----------------------------------------------------------------------------------------

    def _phase(self, name: str, title: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One measured phase, with the machine's load average just before it (figures.phase records after)."""
        load = round(procstat.load_average(), 2)
        say(f"phase {name}: {title} (load {load:.2f})")
        found = run()
        found["load_average_before"] = load
        found.setdefault("load_average_after", round(procstat.load_average(), 2))
        self.result[name] = found
        if "marked" in found:
            report.phase_line(name, found)
        return found

    def run(self) -> dict[str, Any]:
        self.setup()
        assert self.layout
        layout = self.layout
        if self.nth_build is not None:
            self.nth_binary()  # its build must not share the CPU with a measured phase
        self.endpoint = sqs_endpoint.open_endpoint(self.args.sqs, self.workdir)
        self.endpoint.start()
        self.sqs_ceiling()
        self.result["load_average_before"] = round(procstat.load_average(), 2)
        layout.lay_out(say)
        self._phase(
            "spotq", f"{self.scale.nodes} warnings at once",
            lambda: self.run_spotq(layout.spot_names, "spotq", profile=self.args.profile),
        )  # fmt: skip
        if self.args.kubectl:
            layout.lay_out(say)
            self._phase("kubectl", f"kubectl drain x{KUBECTL_WORKERS}", self.run_kubectl)
        for config in self.args.nth if self.nth_binary() is not None else []:
            binary = self.nth_binary()
            assert binary is not None
            layout.lay_out(say)
            self._phase(
                f"nth-{config}", f"aws-node-termination-handler {nth_build.VERSION}-{nth_build.COMMIT}, {config}",
                functools.partial(nth_phase.run_nth, self, binary, config),
            )  # fmt: skip
        if self.args.ceiling:
            layout.lay_out(say, max_unavailable="100%")
            self._phase("ceiling", "the API server's ceilings, then spotq's share", self.run_ceiling)
            share = self.result["ceiling"]["spotq_share"]
            say(f"  spotq evicted at {self.result['ceiling']['spotq']['eviction_rate_per_second']}/s = "
                f"{share} of the ceiling")  # fmt: skip
        return self.result


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        not pod["metadata"].get("deletionTimestamp")
        and status.get("phase") == "Running"
        and any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    )


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
        env = spotq_signals.spotq_env(endpoint, queue_url, cluster.kubeconfig_path)
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
