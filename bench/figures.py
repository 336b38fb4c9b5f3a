"""The figures of one phase, computed from its per-node rows and the observer's snapshot: latencies as p50/p99/max,
nodes drained within the window, PDB lows, capacity back, CPU; and what the deadline (event + 120 s) leaves of the
pods (`deadline`). Pure apart from reading the load average.

phases.py collects the rows; report.py renders what this returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from bench import budget_slack, procstat

# Spot's two-minute warning: the window a drain must fit in, s after the event's time.
WINDOW_SECONDS = 120


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def stats(values: Iterable[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "n": len(present),
        "p50": rounded(percentile(present, 50)),
        "p99": rounded(percentile(present, 99)),
        "max": rounded(max(present) if present else None),
    }


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def phase(
    rows: list[dict[str, Any]],
    start: float,
    event_time: float,
    snap: dict[str, Any],
    sampler: procstat.Sampler,
    who: str,
) -> dict[str, Any]:
    """The figures every contender gets. `rows` carry per-node times (enqueued, received, marked, drained; None
    when not reached; marked: when the write that marked the node returned, by the audit log; marked_seen: when the
    node watch saw it), `start` is when the wave was sent, `event_time` the warnings' own time (whole seconds)."""

    def since(key: str, origin: str = "enqueued") -> list[float | None]:
        return [r[key] - r[origin] if r.get(key) is not None and r.get(origin) is not None else None for r in rows]

    drained = [r["drained"] for r in rows]
    all_drained = max(drained) - start if drained and None not in drained else None
    within = sum(1 for d in drained if d is not None and d - event_time <= WINDOW_SECONDS)
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
    cpu = {name: rounded(sampler.cpu_used(name), 1) for name in sampler.pids}
    marked = [r["marked"] for r in rows if r["marked"] is not None]
    return {
        "nodes": len(rows),
        "marked": sum(1 for r in rows if r["marked"] is not None),
        "drained": sum(1 for d in drained if d is not None),
        "enqueue_spread_seconds": rounded(max(r["enqueued"] for r in rows) - start),
        "enqueued_to_received": stats(since("received")),
        "received_to_marked": stats(since("marked", "received")),
        "enqueued_to_marked": stats(since("marked")),
        # The same marks as the benchmark's node watch saw them (later, by the watch's lag under load).
        "enqueued_to_marked_seen": stats(since("marked_seen")),
        "enqueued_to_drained": stats(since("drained")),
        # First warning sent → last node tainted+cordoned: nodes per second, against the minimal client's.
        "mark_rate_per_second": rounded(len(marked) / (max(marked) - start), 1) if marked else None,
        "all_drained_seconds": rounded(all_drained),
        "drained_within_120s_of_event": within,
        "drained_within_60s_of_event": within_60,
        "share_drained_within_120s": rounded(within / len(rows), 3),
        "pdb_violations": pdb_violations,
        "pdb_lowest_margin": min(margins) if margins else None,
        "deployments_below_min_available": deployment_short,
        "first_replacement_ready_seconds": rounded(first_replacement - start) if first_replacement else None,
        "capacity_restored_seconds": rounded(snap["capacity_restored"] - start) if snap["capacity_restored"] else None,
        "cpu_seconds": cpu,
        "load_average_after": round(procstat.load_average(), 2),
        "timeline": {
            "capacity": [(round(t - start, 2), c) for t, c in capacity[:: max(1, len(capacity) // 2000)]],
            "on_interrupted": [(round(t - start, 2), c) for t, c in _thin(snap.get("on_interrupted") or [])],
        },
        "watch_errors": snap["watch_errors"],
        # Who held the evictions back in the window: the PDBs (budget-bound) or the contender (allowance unused).
        "budget_use": budget_slack.use(snap.get("budget_slack") or [], start, event_time + WINDOW_SECONDS),
        "who": who,
    }


def value_at(points: list[tuple[float, int]], when: float) -> int | None:
    """A step series' value at `when` (its last point at or before it); None before its first point."""
    before = [count for t, count in points if t <= when]
    return before[-1] if before else None


def deadline(
    evicted_at: Mapping[str, float],
    pods: int,
    event_time: float,
    grace: float,
    on_interrupted: list[tuple[float, int]],
    start: float,
) -> dict[str, Any]:
    """What the two-minute deadline (event time + 120 s) leaves of the interrupted nodes' `pods`.

    A pod whose eviction was accepted at least its grace before the deadline can finish its termination; one
    evicted later is cut short; one not evicted is killed with the instance. `evicted_at` is each pod's accepted
    eviction (audit log, pod name → when the API server set its deletion); `on_interrupted` is the observer's
    series of pods still bound to interrupted nodes (terminating or not)."""
    end = event_time + WINDOW_SECONDS
    graceful = sum(1 for t in evicted_at.values() if t + grace <= end)
    by_deadline = sum(1 for t in evicted_at.values() if t <= end)
    still_bound = value_at(on_interrupted, end)
    return {
        "deadline_after_event_seconds": WINDOW_SECONDS,
        "deadline_after_start_seconds": rounded(end - start),
        "grace_seconds": grace,
        "pods": pods,
        "evicted_with_grace_before_deadline": graceful,
        "share_evicted_with_grace": rounded(graceful / pods, 3) if pods else None,
        "evicted_grace_cut_short": by_deadline - graceful,
        "evicted_by_deadline": by_deadline,
        "not_evicted_by_deadline": max(0, pods - by_deadline),
        "bound_at_deadline": still_bound,
        "eviction_offsets": sorted(round(t - start, 2) for t in evicted_at.values()),
    }


def _thin(points: list[tuple[float, int]], most: int = 2000) -> list[tuple[float, int]]:
    """At most about `most` points, keeping the last (a step series' final value)."""
    if len(points) <= most:
        return points
    return points[:: len(points) // most] + points[-1:]


def projected_all_drained(
    rows: list[dict[str, Any]], start: float, time_limit: float, not_started: int
) -> dict[str, Any]:
    """When a contender stopped starting drains at `time_limit` with nodes left: all-drained at the same rate."""
    done = [r["drained"] for r in rows if r["drained"] is not None]
    if not not_started or not done:
        return {}
    elapsed = max(done) - start
    return {
        "projected_all_drained_seconds": rounded(elapsed * len(rows) / len(done)),
        "projection": (
            f"stopped after {time_limit:.0f}s: {len(done)}/{len(rows)} nodes drained in "
            f"{elapsed:.0f}s; all-drained projected at the same rate"
        ),
    }


def ratio_vs_kubectl(result: dict[str, Any]) -> None:
    """How many times faster spotq drained every node than kubectl x10 (projected if kubectl was stopped)."""
    spotq_all = (result.get("spotq") or {}).get("all_drained_seconds")
    k = result.get("kubectl") or {}
    kubectl_all = k.get("all_drained_seconds") or k.get("projected_all_drained_seconds")
    if spotq_all and kubectl_all:
        result["ratio_vs_kubectl"] = round(kubectl_all / spotq_all, 2)
