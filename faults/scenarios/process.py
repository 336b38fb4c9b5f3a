"""Faults of spotq's own process: killed and restarted, replaced by a rolling update, several replicas with one
killed, its own node interrupted.

Each process has its own ServiceAccount, so "the new process resumed the drain of node X" is the new user's first
request for X's pods in the audit log, compared with when that process answered /readyz 200.
"""

from __future__ import annotations

import time

from faults import measure
from faults.env import Environment
from faults.measure import Figures
from faults.trial import Options, Trial, say

# How long before the rest of the wave spotq's own node is warned (own_node).
OWN_NODE_HEAD_START_SECONDS = 2.0


def kill_restart(env: Environment, opts: Options) -> Figures:
    """kill -9 mid-wave, restarted `restart_delay` s later as the same pod (a container restart): the drains
    must resume from the nodes' records, not when SQS hands the messages back (visibility timeout, 60 s)."""
    trial = Trial(env, opts, "kill-restart", "kill -9 mid-wave, then restart")
    first = env.spotq("spotq-0")
    trial.interrupt()
    trial.mid_wave(0.3)
    killed = first.kill()
    unfinished = trial.unfinished()
    time.sleep(max(0.0, opts.restart_delay - (time.time() - killed)))
    second = env.spotq("spotq-0")  # the same pod's container, restarted
    assert second.ready is not None
    trial.settle()
    found = trial.finish(serving=[second])
    waits = {
        node: measure.since(trial.audit.first_drain_request(second.user, node, after=second.started), second.ready)
        for node in unfinished
    }
    measure.resumed(found, waits, "restarted process ready → its first request for each unfinished node's pods")
    found.details.update(
        {
            "killed_at_seconds": round(killed - trial.wave.event_time, 1),
            "restarted_ready_seconds": round(second.ready - trial.wave.event_time, 1),
            "unfinished_at_kill": len(unfinished),
        }
    )
    return found


def rolling_update(env: Environment, opts: Options) -> Figures:
    """A rolling update mid-wave: the new pod is up and ready, then the old one gets SIGTERM. The old process must
    hand back what it holds and the new one pick the unfinished drains up within seconds."""
    trial = Trial(env, opts, "rolling-update", "SIGTERM mid-wave, the new process already up")
    old = env.spotq("spotq-old")
    trial.interrupt()
    trial.mid_wave(0.05)  # early: the drains outlast the old process's stop grace (20 s), there is work to hand over
    new = env.spotq("spotq-new")
    terminated = old.terminate()
    code = old.wait_exit(90)
    exited = old.ended or time.time()
    unfinished = trial.unfinished()
    trial.settle()
    found = trial.finish(serving=[new])
    waits = {
        node: measure.since(trial.audit.first_drain_request(new.user, node, after=terminated), exited)
        for node in unfinished
    }
    measure.resumed(found, waits, "old process exited → the new one's first request for each unfinished node's pods")
    found.details.update(
        {
            "sigterm_at_seconds": round(terminated - trial.wave.event_time, 1),
            "old_exit_seconds_after_sigterm": round(exited - terminated, 1),
            "old_exit_code": code,
            "unfinished_when_old_exited": len(unfinished),
        }
    )
    return found


def replicas_available() -> str:
    """'' when spotq has multi-replica coordination (SPOTQ_KUBE__REPLICA_LEASE_SECONDS), else why not."""
    from spotq.settings import KubeSettings

    if "replica_lease_seconds" not in KubeSettings.model_fields:
        return "this spotq has no SPOTQ_KUBE__REPLICA_LEASE_SECONDS: no multi-replica coordination to measure"
    return ""


def replicas(env: Environment, opts: Options, count: int) -> Figures:
    """`count` replicas on one queue, every warning delivered `count` times (so each replica may hold a copy of
    each), the busiest drainer killed mid-wave: each pod evicted once, each node drained by one replica at a
    time, the killed replica's drains taken over within a Lease (not a visibility timeout)."""
    name = f"replicas-{count}"
    why = replicas_available()
    if why:
        return Figures(name, f"{count} replicas, one killed mid-wave", skipped=why)
    lease = float(opts.settings.get("SPOTQ_KUBE__REPLICA_LEASE_SECONDS", 10.0))
    trial = Trial(env, opts, name, f"{count} replicas on one wave, one killed mid-wave")
    running = [env.spotq(f"spotq-r{i}") for i in range(count)]
    trial.interrupt(copies=count)
    trial.mid_wave(0.3)
    drainers = trial.poller.snapshot()["nodes"]
    claims: dict[str, int] = {}
    for seen in drainers.values():
        if seen["drainer"]:
            claims[seen["drainer"][-1][1]] = claims.get(seen["drainer"][-1][1], 0) + 1
    victim = max(running, key=lambda p: claims.get(p.pod, 0))
    killed = victim.kill()
    unfinished = trial.unfinished()
    theirs = [n for n in unfinished if _last(drainers[n]["drainer"]) in (victim.pod, None)]
    trial.settle()
    survivors = [p for p in running if p is not victim]
    found = trial.finish(serving=survivors)
    waits = {
        node: _earliest([trial.audit.first_drain_request(p.user, node, after=killed) for p in survivors], killed)
        for node in theirs
    }
    measure.resumed(
        found, waits, "replica killed → another's first request for each of its unfinished nodes' pods",
        target=lease + measure.RESUME_TARGET_SECONDS,
    )  # fmt: skip
    found.details.update(
        {
            "claims_at_kill": claims,
            "killed": victim.pod,
            "killed_at_seconds": round(killed - trial.wave.event_time, 1),
            "lease_seconds": lease,
            "unfinished_of_killed": len(theirs),
        }
    )
    return found


def own_node(env: Environment, opts: Options) -> Figures:
    """spotq's own node is in the wave. spotq runs as the pod `spotq-own` on one of the Spot nodes (a Pod object
    kwok runs; the process is told its name through the downward API settings). What a kubelet and the pod's
    controller would do is done here: when the pod is deleted (spotq evicted itself) the process gets SIGTERM and
    a replacement pod is bound to an on-demand node, with a new process for it; when the node's deadline comes
    with spotq still on it, the node dies with it (the process killed, the Node deleted).

    Measured: whether spotq got off its node before it died, the gap with no ready spotq, how soon the
    replacement took over the drains the old process left, and the usual figures for the whole wave."""
    trial = Trial(env, opts, "own-node", "spotq's own node interrupted")
    host = trial.wave.nodes[0].node_name
    pod = _place_own_pod(env, host, "spotq-own")
    proc = env.spotq(pod)
    # spotq's own node is warned first, the rest of the wave a moment later: its pods take the PDB's room first, so
    # its drain ends while the others' go on and spotq leaves its node mid-wave (the hand-over is exercised on every
    # run, not only when its node happens to come last).
    started = trial.interrupt(trial.wave.nodes[:1])
    time.sleep(OWN_NODE_HEAD_START_SECONDS)
    trial.interrupt(trial.wave.nodes[1:])
    own_deadline = trial.interruptions[0].deadline
    evicted_at: float | None = None
    idle_since: float | None = None
    while time.time() < own_deadline - 10:  # spotq's own drains end 10 s before the deadline (its safety margin)
        found_pod = env.kube.client.get_or_none(f"/api/v1/namespaces/spotq-system/pods/{pod}")
        if found_pod is None or found_pod["metadata"].get("deletionTimestamp"):
            evicted_at = time.time()
            break
        if trial.unfinished():
            idle_since = None
        elif idle_since is None:
            idle_since = time.time()
        elif time.time() - idle_since > 15:
            break  # every drain over and spotq still on its node: it is staying
        time.sleep(0.5)
    serving = []
    details: dict[str, object] = {}
    if evicted_at is not None:
        terminated = proc.terminate()  # the kubelet stops the evicted pod's container
        spare = trial.wave.spares[0].node_name
        replacement = env.spotq(_place_own_pod(env, spare, "spotq-own-2"))
        assert replacement.ready is not None
        proc.wait_exit(90)
        exited = proc.ended or time.time()
        unfinished = trial.unfinished()
        serving = [replacement]
        trial.settle()
        found = trial.finish(serving=serving)
        waits = {
            node: measure.since(trial.audit.first_drain_request(replacement.user, node, after=terminated), exited)
            for node in unfinished
        }
        measure.resumed(
            found, waits, "old pod's process exited → the replacement's first request for each unfinished node"
        )
        details = {
            "own_pod_evicted_seconds": round(evicted_at - started, 1),
            "replacement_ready_seconds": round(replacement.ready - started, 1),
            "old_exit_seconds": round(exited - started, 1),
            "unfinished_when_old_exited": len(unfinished),
        }
    else:
        time.sleep(max(0.0, own_deadline - time.time()))  # the instance's end: spotq dies with its node
        died = proc.kill() if proc.alive() else time.time()
        env.kube.delete_nodes([host])
        trial.settle(until=trial.deadline() + opts.tail)
        found = trial.finish(serving=serving)
        details = {"died_with_its_node_seconds": round(died - started, 1)}
    found.details.update(details)
    found.own_targets["off its node before it died"] = evicted_at is not None
    return found


def _place_own_pod(env: Environment, node: str, name: str) -> str:
    """A Pod standing for spotq's own, bound to `node` (the scheduler is bypassed: the node is chosen)."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "spotq"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "spotq", "image": "registry.invalid/spotq:1"}],
        },
    }
    env.kube.client.create("/api/v1/namespaces/spotq-system/pods", body)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = env.kube.client.get_or_none(f"/api/v1/namespaces/spotq-system/pods/{name}") or {}
        if (got.get("status") or {}).get("phase") == "Running":
            return name
        time.sleep(0.2)
    say("own-node: spotq's pod did not turn Running; the scenario goes on")
    return name


def _earliest(stamps: list[float | None], start: float) -> float | None:
    found = [s for s in stamps if s is not None]
    return min(found) - start if found else None


def _last(series: list[list[object]]) -> str | None:
    return str(series[-1][1]) if series else None
