"""`make demo`: spotq's main job on the built-in local default, with a live view a person can follow.

Starts the local environment (real control plane + kwok nodes, moto over HTTP), deploys the project's
CloudFormation stack (queue, DLQ, EventBridge rules) into moto, starts `spotq run`, creates ~20 Spot nodes with
Deployments and PDBs, puts Spot interruption warnings for a handful of nodes on the default event bus, and shows
each node move through detected → tainted → cordoned → drained while the replacements start elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .aws import MotoServer
from .cluster import LocalCluster
from .spotq import SpotqProcess
from .workloads import NodeInfo

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "cloudformation" / "spotq.yaml"
NAMESPACE = "shop"
TAINT = "spotq.io/spot-interruption"
# name → (replicas, minAvailable): every PDB allows one disruption at a time, so evictions must wait their turn.
WORKLOADS = {"storefront": (24, 23), "checkout": (16, 15), "search": (20, 19), "recommendations": (12, 11)}


@dataclass
class NodeProgress:
    info: NodeInfo
    pods_at_start: int = 0
    detected: float | None = None
    tainted: float | None = None
    cordoned: float | None = None
    drained: float | None = None
    pods_left: int = 0  # not yet evicted

    def state(self) -> str:
        if self.drained is not None:
            return "drained"
        if self.cordoned is not None:
            return "draining"
        if self.tainted is not None:
            return "tainted"
        if self.detected is not None:
            return "detected"
        return "waiting"


@dataclass
class Demo:
    cluster: LocalCluster
    moto: MotoServer
    t0: float = 0.0
    progress: dict[str, NodeProgress] = field(default_factory=dict)
    replacements_running: float | None = None
    tty: bool = sys.stdout.isatty()
    _printed_lines: int = 0

    def say(self, text: str) -> None:
        print(text, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def deploy_stack(self) -> str:
        cfn = self.moto.client("cloudformation")
        started = time.monotonic()
        cfn.create_stack(StackName="spotq", TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"])
        for _ in range(120):
            stack = cfn.describe_stacks(StackName="spotq")["Stacks"][0]
            if stack["StackStatus"].endswith("_COMPLETE") or stack["StackStatus"].endswith("_FAILED"):
                break
            time.sleep(0.25)
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"stack deployment ended in {stack['StackStatus']}")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        rules = self.moto.client("events").list_rules()["Rules"]
        self.say(
            f"  CloudFormation stack deployed in {time.monotonic() - started:.1f}s: queue {outputs['QueueURL']}, "
            f"{len(rules)} EventBridge rules"
        )
        return str(outputs["QueueURL"])

    def build_cluster(self, spot_nodes: int) -> list[NodeInfo]:
        started = time.monotonic()
        spot = self.cluster.create_spot_nodes(spot_nodes)
        self.cluster.create_on_demand_nodes(3)
        self.cluster.wait_nodes_ready([n.node_name for n in spot])
        self.cluster.create_namespace(NAMESPACE)
        for name, (replicas, min_available) in WORKLOADS.items():
            self.cluster.create_deployment_with_pdb(
                NAMESPACE, name, replicas, min_available=min_available, termination_grace_period_seconds=3
            )
        self.cluster.wait_deployments_ready(NAMESPACE, list(WORKLOADS), timeout=180)
        pods = sum(replicas for replicas, _ in WORKLOADS.values())
        self.say(
            f"  {spot_nodes} Spot nodes + 3 on-demand nodes, {len(WORKLOADS)} Deployments ({pods} pods) with PDBs "
            f"ready in {time.monotonic() - started:.1f}s"
        )
        return spot

    def pods_on(self, node: str, *, terminating: bool = False) -> list[dict[str, Any]]:
        return [
            p
            for p in self.cluster.list_pods(NAMESPACE, node_name=node)
            if terminating or not p["metadata"].get("deletionTimestamp")
        ]

    def interrupt(self, victims: list[NodeInfo]) -> None:
        for victim in victims:
            self.progress[victim.node_name] = NodeProgress(victim, pods_at_start=len(self.pods_on(victim.node_name)))
        self.t0 = time.monotonic()
        entries = [
            {
                "Source": "aws.ec2",
                "DetailType": "EC2 Spot Instance Interruption Warning",
                "Detail": json.dumps({"instance-id": v.instance_id, "instance-action": "terminate"}),
            }
            for v in victims
        ]
        self.moto.client("events").put_events(Entries=entries)

    def observe(self) -> bool:
        now = self.elapsed()
        nodes = {n["metadata"]["name"]: n for n in self.cluster.client.list_items("/api/v1/nodes")}
        for name, progress in self.progress.items():
            node = nodes.get(name, {})
            meta = node.get("metadata", {})
            if progress.detected is None and any(k.startswith("spotq.io/") for k in meta.get("annotations") or {}):
                progress.detected = now
            taints = node.get("spec", {}).get("taints") or []
            if progress.tainted is None and any(t["key"] == TAINT for t in taints):
                progress.tainted = now
                progress.detected = progress.detected or now
            if progress.cordoned is None and node.get("spec", {}).get("unschedulable"):
                progress.cordoned = now
            if progress.drained is None and progress.cordoned is not None:
                progress.pods_left = len(self.pods_on(name))
                # Drained means gone, not only evicted: terminating pods still count until they are deleted.
                if progress.pods_left == 0 and not self.pods_on(name, terminating=True):
                    progress.drained = now
        all_drained = all(p.drained is not None for p in self.progress.values())
        ready = self._ready_replicas()
        if all_drained and self.replacements_running is None and ready == self._wanted_replicas():
            self.replacements_running = now
        return all_drained and self.replacements_running is not None

    def _ready_replicas(self) -> int:
        deployments = self.cluster.client.list_items(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")
        return sum(d.get("status", {}).get("readyReplicas", 0) for d in deployments)

    @staticmethod
    def _wanted_replicas() -> int:
        return sum(replicas for replicas, _ in WORKLOADS.values())

    def render(self) -> None:
        lines = [f"  t+{self.elapsed():5.1f}s   ready replicas {self._ready_replicas()}/{self._wanted_replicas()}"]
        for name, p in self.progress.items():
            evicted = p.pods_at_start - p.pods_left if p.cordoned is not None else 0
            bar = "#" * evicted + "." * max(p.pods_at_start - evicted, 0)
            lines.append(f"  {name:<28} {p.state():<9} pods evicted {evicted:>2}/{p.pods_at_start:<2} [{bar}]")
        if self.tty:
            if self._printed_lines:
                sys.stdout.write(f"\x1b[{self._printed_lines}F")
            sys.stdout.write("\n".join(line + "\x1b[K" for line in lines) + "\n")
            sys.stdout.flush()
            self._printed_lines = len(lines)
        else:
            # Not a terminal (CI, a pipe): print only when something changed, one compact line.
            summary = " ".join(f"{p.info.node_name.split('.')[0]}={p.state()}" for p in self.progress.values())
            if summary != getattr(self, "_last_summary", ""):
                self._last_summary = summary
                self.say(f"  t+{self.elapsed():5.1f}s  {summary}")

    def summary(self) -> bool:
        self.say("\nSummary (seconds after the warnings were put on the event bus):")
        self.say(f"  {'node':<28} {'pods':>4} {'tainted':>8} {'cordoned':>9} {'drained':>8}")
        ok = True
        for name, p in self.progress.items():
            cells = [f"{v:8.1f}" if v is not None else "       -" for v in (p.tainted, p.cordoned, p.drained)]
            self.say(f"  {name:<28} {p.pods_at_start:>4} {cells[0]} {cells[1]:>9} {cells[2]}")
            ok = ok and p.drained is not None and p.drained < 120
        victims = set(self.progress)
        misplaced = [
            p["metadata"]["name"]
            for p in self.cluster.list_pods(NAMESPACE)
            if p["spec"].get("nodeName") in victims and not p["metadata"].get("deletionTimestamp")
        ]
        running = f"{self.replacements_running:.1f}s" if self.replacements_running is not None else "not reached"
        self.say(f"  all {self._wanted_replicas()} replicas Ready again on the remaining nodes at: {running}")
        self.say(f"  pods left on interrupted nodes: {len(misplaced)}")
        return ok and not misplaced and self.replacements_running is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testenv.demo", description=__doc__)
    parser.add_argument("--spot-nodes", type=int, default=20)
    parser.add_argument("--interrupt", type=int, default=5, help="how many nodes get a Spot warning")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    # moto warns that it skips AWS::SQS::QueuePolicy (it enforces no queue policies): true, and not news here.
    warnings.filterwarnings("ignore", module="moto")
    logging.getLogger("moto").setLevel(logging.ERROR)
    print(f"spotq demo — {datetime.now().strftime('%H:%M:%S')}", flush=True)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spotq-demo-")))
        print("starting the local environment (etcd, kube-apiserver, controller-manager, scheduler, kwok, moto)…")
        cluster = stack.enter_context(LocalCluster(verbose=False))
        moto = stack.enter_context(MotoServer(verbose=False))
        print(f"  control plane up in {cluster.startup_seconds:.1f}s at {cluster.server_url}")
        demo = Demo(cluster, moto)
        queue_url = demo.deploy_stack()
        spot = demo.build_cluster(args.spot_nodes)
        env = {
            **moto.env(),
            "SPOTQ_QUEUE__URL": queue_url,
            "SPOTQ_QUEUE__WAIT_SECONDS": "2",
            "SPOTQ_AWS__ENDPOINT_URL": moto.endpoint_url,
            "SPOTQ_AWS__REGION": moto.region,
            "SPOTQ_KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
            "SPOTQ_KUBE__NODE_SELECTOR": "lifecycle=Ec2Spot",
        }
        spotq = stack.enter_context(SpotqProcess(env, log_path=workdir / "spotq.log"))
        print(f"  spotq running (queue mode), metrics at {spotq.url}/metrics, log {workdir / 'spotq.log'}")
        victims = sorted(spot, key=lambda n: -len(demo.pods_on(n.node_name)))[: args.interrupt]
        print(f"\nputting {len(victims)} Spot interruption warnings on the default event bus…")
        demo.interrupt(victims)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            done = demo.observe()
            demo.render()
            if done:
                break
            time.sleep(0.3)
        sqs = moto.client("sqs")
        for _ in range(50):  # the last messages are deleted in a batch just after their drains end
            attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
            if (
                int(attributes["ApproximateNumberOfMessages"])
                + int(attributes["ApproximateNumberOfMessagesNotVisible"])
                == 0
            ):
                break
            time.sleep(0.2)
        ok = demo.summary()
        evictions = spotq.metric("spotq_evictions_total", result="evicted")
        refused = spotq.metric("spotq_evictions_total", result="pdb_blocked")
        print(f"  evictions accepted {evictions:.0f}, refused by PDBs and retried {refused:.0f}")
        print(f"  messages deleted after success: {spotq.metric('spotq_messages_finished_total', outcome='done'):.0f}")
        if not ok:
            print("\nspotq log tail:\n" + spotq.log_tail(30))
    verdict = "demo finished" if ok else "demo FAILED"
    print(f"\n{verdict} in {time.monotonic() - started:.0f}s; everything it started is stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
