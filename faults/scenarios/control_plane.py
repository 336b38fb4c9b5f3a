"""Faults of the Kubernetes API server mid-wave: hung (SIGSTOP for `apiserver_pause` s, then SIGCONT), killed
(kill -9) then restarted with the same command line `restart_delay` s later, and throttling: restarted with a few
request seats for `throttle` s (API Priority and Fairness turns what does not fit away with 429), then with its own;
and spotq's own token revoked for `token_outage` s (every request refused with 401), then a new one in its kubeconfig.

The whole control plane stalls with it (scheduler, controllers and kwok talk to it too); what is measured is how
soon spotq works again once the API server answers: its first eviction after the fault, and that every drain
still ends, with nothing lost and no budget broken.
"""

from __future__ import annotations

import time

from faults import apiserver, measure
from faults.env import Environment
from faults.measure import Figures
from faults.trial import Options, Trial


def apiserver_pause(env: Environment, opts: Options) -> Figures:
    trial = Trial(env, opts, "apiserver-pause", f"kube-apiserver SIGSTOP {opts.apiserver_pause:g} s mid-wave")
    proc = env.spotq("spotq-0")
    trial.interrupt()
    trial.mid_wave(0.3)
    apiserver.pause(env.kube)
    paused = time.time()
    time.sleep(opts.apiserver_pause)
    apiserver.resume(env.kube)
    resumed = time.time()
    trial.settle()
    found = trial.finish(serving=[proc])
    _resume_figures(found, trial, proc.user, paused, resumed, "SIGCONT")
    found.details.update(
        {
            "paused_at_seconds": round(paused - trial.wave.event_time, 1),
            "not_ready_samples_while_paused": trial.sampler.not_ready(proc.label, paused, resumed),
            "ready_again_after_seconds": _after(trial.sampler.ready_again(proc.label, resumed), resumed),
        }
    )
    return found


def apiserver_restart(env: Environment, opts: Options) -> Figures:
    trial = Trial(env, opts, "apiserver-restart", "kube-apiserver kill -9 mid-wave, then restart")
    proc = env.spotq("spotq-0")
    trial.interrupt()
    trial.mid_wave(0.3)
    killed = apiserver.kill(env.kube)
    time.sleep(max(0.0, opts.restart_delay - (time.time() - killed)))
    ready = apiserver.restart(env.kube)
    trial.settle()
    found = trial.finish(serving=[proc])
    _resume_figures(found, trial, proc.user, killed, ready, "restarted API server ready")
    found.details.update(
        {
            "killed_at_seconds": round(killed - trial.wave.event_time, 1),
            "down_seconds": round(ready - killed, 1),
            "ready_again_after_seconds": _after(trial.sampler.ready_again(proc.label, ready), ready),
        }
    )
    return found


def apiserver_throttled(env: Environment, opts: Options) -> Figures:
    reads, writes = opts.throttle_seats
    title = f"kube-apiserver with {reads}+{writes} request seats for {opts.throttle:g} s mid-wave (429 storm)"
    trial = Trial(env, opts, "apiserver-throttled", title)
    proc = env.spotq("spotq-0")
    trial.interrupt()
    trial.mid_wave(0.3)
    killed = apiserver.kill(env.kube)
    throttled = apiserver.restart(env.kube, seats=opts.throttle_seats)
    time.sleep(opts.throttle)
    apiserver.kill(env.kube)
    ready = apiserver.restart(env.kube)
    trial.settle()
    found = trial.finish(serving=[proc])
    _resume_figures(found, trial, proc.user, killed, ready, "API server back with its own seats")
    during = [r for r in trial.audit.requests if r.user == proc.user and throttled <= r.received <= ready]
    found.details.update(
        {
            "throttled_at_seconds": round(throttled - trial.wave.event_time, 1),
            "throttled_seconds": round(ready - throttled, 1),
            "spotq_requests_while_throttled": len(during),
            "spotq_429s_while_throttled": sum(1 for r in during if r.code == 429),
            "evictions_while_throttled": sum(
                1 for r in during if r.resource == "pods/eviction" and 200 <= r.code < 300
            ),
            "ready_again_after_seconds": _after(trial.sampler.ready_again(proc.label, ready), ready),
        }
    )
    return found


def token_revoked(env: Environment, opts: Options) -> Figures:
    """spotq's token is revoked mid-wave (the Secret it is bound to deleted: every request of it refused with 401,
    as an expired token is) and a new one lands in its kubeconfig `token_outage` s later (as a rotation puts it)."""
    title = f"spotq's token revoked mid-wave, a new one in its kubeconfig {opts.token_outage:g} s later"
    trial = Trial(env, opts, "token-revoked", title)
    proc = env.spotq("spotq-0", revocable=True)
    trial.interrupt()
    trial.mid_wave(0.3)
    revoked = env.revoke_token(proc)
    time.sleep(opts.token_outage)
    renewed = env.renew_token(proc)
    trial.settle()
    found = trial.finish(serving=[proc])
    _resume_figures(found, trial, proc.user, revoked, renewed, "new token in the kubeconfig")
    # (The refused requests themselves are not in the audit log: a request that fails authentication has no user,
    # and the environment's audit policy logs only spotq's ServiceAccounts.)
    found.details.update(
        {
            "revoked_at_seconds": round(revoked - trial.wave.event_time, 1),
            "outage_seconds": round(renewed - revoked, 1),
            "last_request_before_renewal_seconds": _after(trial.audit.last_request(proc.user, before=renewed), revoked),
            "not_ready_samples_while_revoked": trial.sampler.not_ready(proc.label, revoked, renewed),
            "ready_again_after_seconds": _after(trial.sampler.ready_again(proc.label, renewed), renewed),
        }
    )
    return found


def _resume_figures(found: Figures, trial: Trial, user: str, fault: float, since: float, what: str) -> None:
    """Resume, for each node with pods not yet evicted when the fault began, after the API server is back
    (`since`): spotq's first request for the node's pods, or its first eviction of a pod the fault left under the
    wave's one PodDisruptionBudget. A node whose pods wait their turn in that budget (others' replacements not yet
    Ready) has resumed when the budget's queue has: its own first eviction measures the budget, not spotq."""
    accepted = trial.audit.accepted(trial.wave.namespace)
    left = {
        item.node: {pod for pod in item.pods if not any(e.at < fault for e in accepted.get(pod, []))}
        for item in trial.interruptions
    }
    queue_resumed = trial.audit.first_eviction(user, after=since, pods=set[str]().union(*left.values()))
    waits: dict[str, float | None] = {}
    for node, remaining in left.items():
        if not remaining:
            continue
        stamps = [trial.audit.first_drain_request(user, node, after=since), queue_resumed]
        seen = [s for s in stamps if s is not None]
        waits[node] = min(seen) - since if seen else None
    if not waits:
        found.details["resume"] = "every pod had been evicted before the fault"
    how = "spotq's first pod request for each node with pods left, or first eviction in their budget"
    measure.resumed(found, waits, f"{what} → {how}")


def _after(when: float | None, since: float) -> float | None:
    return None if when is None else round(when - since, 1)
