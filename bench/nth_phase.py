"""The aws-node-termination-handler phase of one scale: the same K warnings, at once, on the same freshly rebuilt
layout and the same ElasticMQ, handled by NTH in queue mode (one configuration of nth.CONFIGS), measured as spotq's
phase is: per node enqueued → received (its ReceiveMessage reply, on the wire) → tainted+cordoned → drained (the
watches), capacity, PDB lows, the deadline figures, its API requests from the audit log by its user, its AWS calls
and moto's DescribeInstances latency from the router.

The phase ends when every node is drained and every replacement Ready; or when NTH has deleted every message
while nodes still hold pods (nothing more will happen to them); or after `--nth-limit` s; or if NTH exits.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import figures, nth, nth_build, procstat, sqs_endpoint, world
from bench.aws_router import AwsRouter
from bench.console import say
from bench.figures import rounded
from bench.waiting import queue_settled, wait_for
from testenv.aws import MotoServer
from testenv.procs import ManagedProcess

if TYPE_CHECKING:
    from bench.phases import ScaleRun

why_not_run = nth.why_not_run


def moto_for_nth(run: ScaleRun) -> MotoServer:
    """moto with one running instance per Spot node (started once per scale, stopped by ScaleRun.close)."""
    assert run.cluster and run.layout
    if run.nth_moto is None:
        run.nth_moto = MotoServer(verbose=False).start()
        nodes = []
        for name, instance_id in run.layout.spot:
            provider = str(((run.cluster.get_node(name) or {}).get("spec") or {}).get("providerID", ""))
            nodes.append((name, instance_id, provider.split("/")[-2]))  # aws:///<zone>/<instance id>
        nth.register_instances(run.nth_moto, nodes)
    return run.nth_moto


def run_nth(run: ScaleRun, binary: Path, config: str) -> dict[str, Any]:
    assert run.cluster and run.cluster.pki and run.layout and run.endpoint
    cluster, layout, endpoint, pki = run.cluster, run.layout, run.endpoint, run.cluster.pki
    moto = moto_for_nth(run)
    router = AwsRouter({"sqs": endpoint.endpoint_url, "ec2": moto.endpoint_url, "autoscaling": moto.endpoint_url})
    router.start()
    queue_url = endpoint.create_queue(f"nth-{config}")
    token = re.search(r'token: "([^"]+)"', run.kubeconfigs["nth"].read_text())
    assert token is not None
    run_dir = nth.in_cluster_files(
        run.workdir / f"nth-{config}-run", token.group(1), pki.ca_cert, world.IDENTITY_NAMESPACE
    )
    env = nth.environment(
        server_url=cluster.server_url, aws_endpoint=router.url, queue_url=queue_url,
        node_name=layout.remaining_names[0], config=nth.CONFIGS[config],
    )  # fmt: skip
    process = nth.start(binary, run_dir, run.workdir / f"nth-{config}.log", env)
    try:
        polling = wait_for(
            f"nth-{config} polling SQS", lambda: router.calls["sqs ReceiveMessage"] > 0 or not process.running(), 60
        )
        if not polling or not process.running():
            say(f"  nth-{config} did not start; last lines of its log:\n{process.log_tail(15)}")
            return {"error": "did not start", "log_tail": process.log_tail(15)}
        return _wave(run, config, process, router, queue_url)
    finally:
        process.stop(10)
        router.stop()


def _wave(run: ScaleRun, config: str, process: ManagedProcess, router: AwsRouter, queue_url: str) -> dict[str, Any]:
    assert run.layout and run.audit and run.endpoint
    endpoint = run.endpoint
    nodes = run.layout.spot_names
    observer = run.observer(nodes, nth.TAINT)
    instance_of = {n.node_name: n.instance_id for n in run.layout.spot}
    sampler = procstat.Sampler(run.pids() | {"nth": process.pid}).start()
    run.audit.mark()
    aws_mark = router.mark()
    bodies = [sqs_endpoint.spot_warning(instance_of[name]) for name in nodes]
    event_time = math.floor(time.time())  # the bodies carry whole seconds
    start = time.time()
    observer.begin(start)
    enqueued = sqs_endpoint.send_batched(endpoint, queue_url, bodies, senders=16)
    say(f"  nth-{config}: {len(nodes)} warnings enqueued in {max(enqueued) - start:.2f}s")
    sqs = endpoint.client()

    def finished() -> bool:
        if observer.done() or not process.running():
            return True
        # NTH deletes a message after its node's drain: an empty queue with nodes still holding pods means it is
        # done with every node it will do anything to.
        return time.time() - start >= 20 and not observer.all_drained() and queue_settled(sqs, queue_url)

    wait_for(f"nth-{config} drains", finished, run.args.nth_limit, observer.progress)
    ended = time.time() - start
    exited = process.popen.poll()
    sampler.stop()
    memory = procstat.memory_mb(process.pid) if process.running() else {}
    time.sleep(2.5)  # the audit backend writes in batches (1 s)
    observer.stop()
    requests = run.audit.since_mark([world.user("nth")])[world.user("nth")]
    described, aws_calls = router.since(aws_mark)
    snap = observer.snapshot()
    marked_at = requests.marked_at(nth.TAINT)  # when its writes returned; the watch's sighting beside it
    rows = [
        {
            "node": name,
            "pods": snap["nodes"][name]["pods_at_start"],
            "enqueued": stamp,
            "received": router.received.get(instance_of[name]),
            "marked": marked_at.get(name, snap["nodes"][name]["marked"]),
            "marked_seen": snap["nodes"][name]["marked"],
            "drained": snap["nodes"][name]["drained"],
        }
        for name, stamp in zip(nodes, enqueued, strict=True)
    ]
    found = figures.phase(rows, start, event_time, snap, sampler, f"nth-{config}")
    found["deadline"] = run.deadline(rows, requests.evicted_at, event_time, snap, start)
    evicted = len(requests.evicted_at)
    found.update(
        {
            "config": nth.CONFIGS[config],
            "version": f"{nth_build.VERSION}-{nth_build.COMMIT}",
            "phase_seconds": rounded(ended),
            "stopped_by_limit": ended >= run.args.nth_limit,
            "exit_code": exited,
            "evicted_pods": evicted,
            "requests": requests.as_dict(),
            "requests_per_evicted_pod": rounded(requests.total / evicted) if evicted else None,
            "eviction_rate_per_second": rounded(requests.eviction_rate(), 1),
            "aws_calls": aws_calls,
            "aws_errors": dict(router.errors),
            "aws_unrouted": router.unrouted,
            "moto_describe_instances_seconds": figures.stats(described),
            "nth_cpu_seconds": rounded(sampler.cpu_used("nth")),
            "nth_peak_rss_mb": rounded(sampler.peak_rss("nth"), 1),
            "nth_vmhwm_mb": rounded(memory.get("VmHWM"), 1),
            "rows": rows,
        }
    )
    return found
