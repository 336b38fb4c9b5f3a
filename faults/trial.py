"""One wave under observation, the frame every scenario fills in: lay the wave out, watch it, interrupt it, wait for
the moment to inject a fault, let it settle, then collect the figures (measure.figure).

Every wait is bounded: a scenario ends at the latest `tail` seconds after the interruptions' deadline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from faults import measure
from faults.audit import Audit
from faults.env import Environment, Spotq
from faults.measure import Figures, Interruption
from faults.observe import ClusterPoller, ProcessSampler
from faults.wave import Shape, Wave
from testenv.workloads import NodeInfo


@dataclass
class Options:
    nodes: int = 10
    pods_per_node: int = 4
    grace_seconds: int = 5
    max_unavailable: str = "10%"
    ready_delay: float = 3.0
    restart_delay: float = 5.0  # kill -9 → restart of spotq (a container restart)
    apiserver_pause: float = 20.0
    throttle: float = 30.0  # how long the API server runs with a few request seats (429 storms)
    throttle_seats: tuple[int, int] = (4, 2)  # its --max-requests-inflight, --max-mutating-requests-inflight then
    sqs_outage: float = 45.0
    flood_clients: int = 30  # noisy neighbours: ServiceAccounts listing every pod in a loop, one thread each
    flood_seats: tuple[int, int] = (20, 10)  # the API server's seats while they flood
    token_outage: float = 10.0  # spotq's token revoked → a new one in its kubeconfig, s
    flood: int = 2000
    flood_real: int = 10
    soak_minutes: float = 3.0
    replicas: tuple[int, ...] = (2, 3)
    tail: float = 30.0  # how long after the deadline a scenario may still wait for the wave to settle
    quiet: bool = False
    recovery: float = 60.0  # how long, at the end, a serving process may take to answer /readyz 200 again
    wait_for_queue: bool = True  # settle only once the queue is empty too (False: once the drains are over)
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> Shape:
        return Shape(self.nodes, self.pods_per_node, self.grace_seconds, self.max_unavailable,
                     ready_delay=self.ready_delay)  # fmt: skip


def say(text: str) -> None:
    print(f"[faults] {text}", file=sys.stderr, flush=True)


class Trial:
    def __init__(self, env: Environment, opts: Options, scenario: str, title: str, *, shape: Shape | None = None,
                 extra_capacity: dict[int, int] | None = None) -> None:  # fmt: skip
        self.env = env
        self.opts = opts
        self.scenario = scenario
        self.title = title
        self.started = time.time()
        self.wave = Wave(env.kube, shape or opts.shape).build(extra_capacity=extra_capacity)
        self.poller = ClusterPoller(env.kube, self.wave.namespace, self.wave.names).start()
        self.sampler = ProcessSampler(env.processes).start()
        self.interruptions: list[Interruption] = []
        self.notes: dict[str, object] = {}
        self.audit = Audit()
        if not opts.quiet:
            say(f"{scenario}: wave of {len(self.wave.nodes)} nodes x {self.wave.shape.pods_per_node} pods laid out")

    # -- interrupting -------------------------------------------------------------------------------------------

    def pods_on(self, nodes: list[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {n: set() for n in nodes}
        for pod in self.env.kube.list_pods(self.wave.namespace):
            node = pod["spec"].get("nodeName") or ""
            if node in found:
                found[node].add(f"{self.wave.namespace}/{pod['metadata']['name']}")
        return found

    def interrupt(self, nodes: list[NodeInfo] | None = None, *, copies: int = 1) -> float:
        """A Spot warning per node (each sent `copies` times, every copy in one go); returns the event time."""
        chosen = nodes or self.wave.nodes
        bodies = self.wave.warnings(nodes=chosen)
        pods = self.pods_on([n.node_name for n in chosen])
        ids = self.env.sqs.send([body for body in bodies for _ in range(copies)])
        for i, node in enumerate(chosen):
            self.interruptions.append(
                Interruption(
                    node.node_name, node.instance_id, self.wave.event_time,
                    ids[i * copies : (i + 1) * copies], pods[node.node_name],
                )
            )  # fmt: skip
        return self.wave.event_time

    def also_send(self, instance: str, body: str) -> str:
        """Another message for an interruption already under way (a redelivery, a state change)."""
        (mid,) = self.env.sqs.send([body])
        for item in self.interruptions:
            if item.instance == instance:
                item.messages.append(mid)
        return mid

    # -- waiting ------------------------------------------------------------------------------------------------

    def wait(self, what: str, check: Callable[[], bool], timeout: float, every: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(every)
        if not self.opts.quiet:
            say(f"{self.scenario}: {what}: not within {timeout:.0f}s")
        return False

    def pods_left(self) -> int:
        return self.poller.pods_left([i.node for i in self.interruptions])

    def mid_wave(self, share: float = 0.3, timeout: float = 90.0) -> float:
        """Wait until `share` of the interrupted nodes' pods are gone (and not all); returns when."""
        total = sum(len(i.pods) for i in self.interruptions)
        self.wait("mid-wave", lambda: self.pods_left() <= total * (1 - share), timeout, every=0.1)
        now = time.time()
        self.notes["fault_at_pods_left"] = self.pods_left()
        self.notes["fault_at_seconds"] = round(now - self.wave.event_time, 1)
        return now

    def unfinished(self) -> list[str]:
        """The interrupted nodes whose drains are not over, from a fresh look."""
        self.poller.poll_now()
        return self.poller.unfinished([i.node for i in self.interruptions])

    def deadline(self) -> float:
        return max(i.deadline for i in self.interruptions)

    def settled(self) -> bool:
        if self.poller.unfinished([i.node for i in self.interruptions]):
            return False
        return not self.opts.wait_for_queue or self.env.sqs.depth() == 0

    def settle(self, *, until: float | None = None) -> bool:
        """Until every interrupted node is drained and on record as finished and the queue is empty, or `until`
        (default: the deadline + tail)."""
        limit = (until or self.deadline() + self.opts.tail) - time.time()
        return self.wait("the wave to settle", self.settled, max(1.0, limit), every=0.5)

    # -- figures ------------------------------------------------------------------------------------------------

    def finish(self, *, serving: list[Spotq] | None = None) -> Figures:
        """Stop observing and every process, then count. `serving`: the processes that should be up and ready at
        the end (default: the live ones)."""
        alive = serving if serving is not None else [p for p in self.env.processes if p.alive()]
        # Stuck or slow? Give each serving process up to `recovery` s to say ready again after the fault.
        self.wait(
            "every serving process ready", lambda: all(p.alive() and p.process.get("/readyz")[0] == 200 for p in alive),
            self.opts.recovery, every=1.0,
        )  # fmt: skip
        time.sleep(1.5)  # a last sample of each process
        self.sampler.stop()
        queue_left = self.env.sqs.depth()
        still = {p.label for p in self.env.processes if p.alive()}
        for proc in self.env.processes:
            proc.stop()
        time.sleep(1.0)  # the watches the stop closed are on record
        self.poller.stop()
        audit = Audit.read(self.env.audit_log)
        found = measure.figure(
            self.scenario, self.title, self.interruptions, self.poller, audit, self.env.sqs.proxy.deleted(),
            self.env.processes, self.sampler, namespace=self.wave.namespace, queue_left=queue_left,
            serving=alive, alive=still,
        )  # fmt: skip
        found.details.update(self.notes)
        found.details["sqs"] = self.env.sqs.proxy.record.as_dict()
        found.details["wave"] = {
            "nodes": len(self.wave.nodes),
            "pods_per_node": self.wave.shape.pods_per_node,
            "grace_seconds": self.wave.shape.grace_seconds,
            "pdb_max_unavailable": self.wave.shape.max_unavailable,
            "pod_ready_delay_seconds": self.wave.shape.ready_delay,
        }
        found.details["seconds"] = round(time.time() - self.started, 1)
        self.audit = audit
        return found
