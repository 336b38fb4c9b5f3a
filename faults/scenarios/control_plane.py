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
from collections.abc import Callable
from dataclasses import dataclass

from faults import apiserver, measure
from faults.audit import Audit
from faults.env import Environment, Spotq
from faults.measure import Figures, Interruption
from faults.observe import BudgetSeen
from faults.trial import Options, Trial


@dataclass
class Hit:
    """One mid-wave fault's run: the trial, the process, when the fault began and when it was over."""

    found: Figures
    trial: Trial
    proc: Spotq
    began: float
    over: float


def _mid_wave(
    env: Environment, opts: Options, name: str, title: str, fault: Callable[[Spotq], tuple[float, float]],
    over: str, *, revocable: bool = False, restarted: bool = False,
) -> Hit:  # fmt: skip
    """One spotq process, a wave, `fault(proc)` 0.3 of the way into it (returning when it began and was over),
    the wave settled; resume measured from `over` (named by `over`'s text). `restarted`: the fault ends in a new
    API server, so whatever was answered after the fault began was answered by it (see resume_waits)."""
    trial = Trial(env, opts, name, title)
    proc = env.spotq("spotq-0", revocable=revocable)
    trial.interrupt()
    trial.mid_wave(0.3)
    began, ended = fault(proc)
    trial.settle()
    found = trial.finish(serving=[proc])
    _resume_figures(found, trial, proc.user, began, ended, over, served_from=began if restarted else ended)
    found.details["ready_again_after_seconds"] = _after(trial.sampler.ready_again(proc.label, ended), ended)
    return Hit(found, trial, proc, began, ended)


def apiserver_pause(env: Environment, opts: Options) -> Figures:
    def fault(_: Spotq) -> tuple[float, float]:
        apiserver.pause(env.kube)
        paused = time.time()
        time.sleep(opts.apiserver_pause)
        apiserver.resume(env.kube)
        return paused, time.time()

    title = f"kube-apiserver SIGSTOP {opts.apiserver_pause:g} s mid-wave"
    hit = _mid_wave(env, opts, "apiserver-pause", title, fault, "SIGCONT")
    hit.found.details["not_ready_samples_while_paused"] = hit.trial.sampler.not_ready(
        hit.proc.label, hit.began, hit.over
    )
    return hit.found


def apiserver_restart(env: Environment, opts: Options) -> Figures:
    def fault(_: Spotq) -> tuple[float, float]:
        killed = apiserver.kill(env.kube)
        time.sleep(max(0.0, opts.restart_delay - (time.time() - killed)))
        return killed, apiserver.restart(env.kube)

    title = "kube-apiserver kill -9 mid-wave, then restart"
    hit = _mid_wave(env, opts, "apiserver-restart", title, fault, "restarted API server ready", restarted=True)
    hit.found.details["down_seconds"] = round(hit.over - hit.began, 1)
    return hit.found


def apiserver_throttled(env: Environment, opts: Options) -> Figures:
    throttled: list[float] = []

    def fault(_: Spotq) -> tuple[float, float]:
        killed = apiserver.kill(env.kube)
        throttled.append(apiserver.restart(env.kube, seats=opts.throttle_seats))
        time.sleep(opts.throttle)
        apiserver.kill(env.kube)
        return killed, apiserver.restart(env.kube)

    reads, writes = opts.throttle_seats
    title = f"kube-apiserver with {reads}+{writes} request seats for {opts.throttle:g} s mid-wave (429 storm)"
    hit = _mid_wave(env, opts, "apiserver-throttled", title, fault, "API server back with its own seats")
    during = [r for r in hit.trial.audit.requests if r.user == hit.proc.user and throttled[0] <= r.received <= hit.over]
    hit.found.details.update(
        {
            "throttled_seconds": round(hit.over - throttled[0], 1),
            "spotq_requests_while_throttled": len(during),
            "spotq_429s_while_throttled": sum(1 for r in during if r.code == 429),
            "evictions_while_throttled": sum(
                1 for r in during if r.resource == "pods/eviction" and 200 <= r.code < 300
            ),
        }
    )
    return hit.found


def token_revoked(env: Environment, opts: Options) -> Figures:
    """spotq's token is revoked mid-wave (the Secret it is bound to deleted: every request of it refused with 401,
    as an expired token is) and a new one lands in its kubeconfig `token_outage` s later (as a rotation puts it)."""

    def fault(proc: Spotq) -> tuple[float, float]:
        revoked = env.revoke_token(proc)
        time.sleep(opts.token_outage)
        return revoked, env.renew_token(proc)

    title = f"spotq's token revoked mid-wave, a new one in its kubeconfig {opts.token_outage:g} s later"
    hit = _mid_wave(env, opts, "token-revoked", title, fault, "new token in the kubeconfig", revocable=True)
    # (The refused requests themselves are not in the audit log: a request that fails authentication has no user,
    # and the environment's audit policy logs only spotq's ServiceAccounts.)
    last = hit.trial.audit.last_request(hit.proc.user, before=hit.over)
    hit.found.details.update(
        {
            "outage_seconds": round(hit.over - hit.began, 1),
            "last_request_before_renewal_seconds": _after(last, hit.began),
            "not_ready_samples_while_revoked": hit.trial.sampler.not_ready(hit.proc.label, hit.began, hit.over),
        }
    )
    return hit.found


def _resume_figures(
    found: Figures, trial: Trial, user: str, fault: float, since: float, what: str, *, served_from: float
) -> None:
    waits, room = resume_waits(
        trial.audit, trial.interruptions, trial.poller.budgets, user,
        namespace=trial.wave.namespace, fault=fault, since=since, served_from=served_from,
    )  # fmt: skip
    if not waits:
        found.details["resume"] = "every pod had been evicted before the fault"
    found.details["budget_room_after_seconds"] = round(room - since, 1)
    how = "spotq's first pod request for each node with pods left, or first eviction in their budget once it had room"
    measure.resumed(found, waits, f"{what} → {how}")


def resume_waits(
    audit: Audit, interruptions: list[Interruption], budgets: dict[str, BudgetSeen], user: str, *,
    namespace: str, fault: float, since: float, served_from: float,
) -> tuple[dict[str, float | None], float]:  # fmt: skip
    """Resume, for each node with pods not yet evicted when the fault began, after the API server is back
    (`since`): spotq's first answered request for the node's pods, or its first eviction of a pod the fault left
    under the wave's one PodDisruptionBudget, counted from when that budget had room again. A node whose pods wait
    their turn in the budget has resumed when the budget's queue has; and while the budget allows nothing (every
    disruption spent, the replacements not yet counted Ready by a control plane catching up on its own restart) no
    handler can evict: that wait is the cluster's, returned as the time the budget had room.

    `served_from`: from when an answered request counts. A restarted API server serves requests before its /readyz
    says ok (its post-start hooks still running), so after a restart every request answered since the kill counts
    (a node resumed before /readyz said ok has a negative wait); after a pause or a revoked token, from `since`.
    A refused request (403 from an authorizer not yet synced) is not a resume."""
    accepted = audit.accepted(namespace)
    left = {
        item.node: {pod for pod in item.pods if not any(e.at < fault for e in accepted.get(pod, []))}
        for item in interruptions
    }
    room = _budget_room(budgets, since)
    queue_resumed = audit.first_eviction(user, after=room, pods=set[str]().union(*left.values()))
    waits: dict[str, float | None] = {}
    for node, remaining in left.items():
        if not remaining:
            continue
        request = audit.first_drain_request(user, node, after=served_from, answered=True)
        seen = [w for w in (measure.since(request, since), measure.since(queue_resumed, room)) if w is not None]
        waits[node] = min(seen) if seen else None
    return waits, room


def _budget_room(budgets: dict[str, BudgetSeen], since: float) -> float:
    """When, from `since` on, the wave's budget first allowed a disruption (currentHealthy > desiredHealthy), as the
    cluster poll saw it; `since` when it did then, or when no sample says otherwise."""
    for budget in budgets.values():
        before = [sample for sample in budget.samples if sample[0] <= since]
        if before and before[-1][1] <= before[-1][2]:
            return next((t for t, healthy, desired in budget.samples if t > since and healthy > desired), since)
    return since


def _after(when: float | None, start: float) -> float | None:
    seconds = measure.since(when, start)
    return None if seconds is None else round(seconds, 1)
