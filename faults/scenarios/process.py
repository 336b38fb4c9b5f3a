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
        node: _since(trial.audit.first_drain_request(second.user, node, after=second.started), second.ready)
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
        node: _since(trial.audit.first_drain_request(new.user, node, after=terminated), exited) for node in unfinished
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
    kwok runs; the process is told its name through the downward API settings); when the node's deadline comes,
    the node dies with whatever still runs there (the process killed, the Node deleted). Measured: whether the
    other drains finish, whether spotq got itself off its node before it died, and how long no spotq ran.

    Not measured here (issue 11 asks for it, spotq does not yet have it): handing the work over to another
    replica; with replicas the scenario would start a second one on an on-demand node (the hook is
    `opts.replicas`)."""
    trial = Trial(env, opts, "own-node", "spotq's own node interrupted")
    host = trial.wave.nodes[0].node_name
    pod = _place_own_pod(env, host)
    proc = env.spotq(pod)
    trial.interrupt()
    own_deadline = trial.deadline()
    evicted_at: float | None = None
    while time.time() < own_deadline - 10:  # spotq's own safety margin: its drain ends 10 s before
        found_pod = env.kube.client.get_or_none(f"/api/v1/namespaces/spotq-system/pods/{pod}")
        if found_pod is None or found_pod["metadata"].get("deletionTimestamp"):
            evicted_at = time.time()
            break
        if not trial.unfinished():
            break
        time.sleep(0.5)
    survived = proc.alive() and evicted_at is None
    died_at: float | None = None
    if survived:
        # spotq is still on its node when the node is reclaimed: wait for the instance's end, then it dies.
        time.sleep(max(0.0, own_deadline - time.time()))
        died_at = proc.kill()
        env.kube.delete_nodes([host])
    trial.settle(until=own_deadline + opts.tail)
    found = trial.finish(serving=[] if survived else [proc])
    found.details.update(
        {
            "own_pod_evicted_seconds": round(evicted_at - trial.wave.event_time, 1) if evicted_at else None,
            "died_with_its_node": survived,
            "killed_at_seconds": round(died_at - trial.wave.event_time, 1) if died_at else None,
            "handover": "none: spotq skips its own pod and has no handover yet",
        }
    )
    found.own_targets["off its node before it died"] = not survived
    return found


def _place_own_pod(env: Environment, node: str) -> str:
    """A Pod standing for spotq's own, bound to `node` (the scheduler is bypassed: it is the node in the wave)."""
    name = "spotq-own"
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


def _since(when: float | None, start: float) -> float | None:
    return None if when is None else when - start


def _earliest(stamps: list[float | None], start: float) -> float | None:
    found = [s for s in stamps if s is not None]
    return min(found) - start if found else None


def _last(series: list[list[object]]) -> str | None:
    return str(series[-1][1]) if series else None
