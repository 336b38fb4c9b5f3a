"""A scenario's figures, from what was seen outside spotq (observe.py: the cluster and the processes; audit.py: the
API server's log; the proxy's record of the queue), and the targets they are held to.

Definitions (every scenario):

* **marked**: interrupted nodes seen tainted by spotq and cordoned before their deadline (the warning's time +
  120 s);
* **pods evicted before the deadline**: pods that were on an interrupted node when it was interrupted and whose
  first accepted eviction (audit log) came before the deadline;
* **nodes drained before the deadline**: interrupted nodes seen with no workload pod before the deadline;
* **PDB violations**: episodes in which the PDB's status had currentHealthy below desiredHealthy;
* **LOST**: an interruption whose every message (each copy of its warning, a state change) was deleted from the
  queue before the deadline while its node still had pods (seen by a poll sent after the delete was confirmed):
  nothing in the queue would bring its drain back;
* **duplicate evictions**: pods with more than one accepted eviction;
* **duplicate drains**: nodes drained by two processes at the same time (their pod requests for the node overlap
  in time, audit log), or drained again after the drain was on record as finished;
* **tracebacks**: `Traceback (most recent call last)` in spotq's output (stderr and its JSON `exception` fields):
  the one thing read from its log, to count crashes;
* **stuck**: once the fault is over, an interrupted node left with pods and no final drain record, a message left
  in the queue, or a process that should be serving and does not answer /readyz 200.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from faults.audit import Audit
from faults.env import Spotq
from faults.observe import BudgetSeen, NodeSeen, ProcessSampler
from faults.wave import WINDOW_SECONDS

RESUME_TARGET_SECONDS = 5.0
RSS_GROWTH_TARGET_PCT = 10.0
FINAL_DRAIN_STATES = ("finished", "timed-out", "blocked")
TRACEBACK = "Traceback (most recent call last)"


class Seen(Protocol):
    """What the cluster poller (observe.ClusterPoller) saw."""

    nodes: dict[str, NodeSeen]
    budgets: dict[str, BudgetSeen]
    gaps: list[tuple[float, float]]

    def pods_seen_after(self, node: str, when: float) -> int | None: ...


@dataclass
class Interruption:
    node: str
    instance: str
    event_time: float
    messages: list[str] = field(default_factory=list)  # ids of every message carrying it
    pods: set[str] = field(default_factory=set)  # namespace/name of the pods on the node when it was interrupted

    @property
    def deadline(self) -> float:
        return self.event_time + WINDOW_SECONDS


@dataclass
class Figures:
    scenario: str
    title: str
    interruptions: int = 0
    pods: int = 0
    marked: int = 0
    evicted_before_deadline: int = 0
    drained_before_deadline: int = 0
    pdb_violations: int = 0
    pdb_worst_margin: int | None = None
    lost: int = 0
    duplicate_evictions: int = 0
    duplicate_drains: int = 0
    resume_seconds: float | None = None  # the slowest of the drains that had to resume
    resume_what: str = ""  # from what to what it is measured
    resume_never: int = 0  # drains that had to resume and never did
    resume_target: float = RESUME_TARGET_SECONDS
    tracebacks: int = 0
    rss_peak_mb: float | None = None
    rss_growth_pct: float | None = None
    stuck: bool | None = None
    stuck_why: list[str] = field(default_factory=list)
    queue_left: int | None = None
    skipped: str = ""  # why the scenario did not run
    own_targets: dict[str, bool] = field(default_factory=dict)  # targets of this scenario alone
    details: dict[str, Any] = field(default_factory=dict)

    def targets(self) -> dict[str, bool | None]:
        """Each target: met (True), missed (False) or not measured here (None)."""
        if self.skipped:
            return {}
        resume: bool | None = None
        if self.resume_never:
            resume = False
        elif self.resume_seconds is not None:
            resume = self.resume_seconds <= self.resume_target
        return {
            "0 lost": self.lost == 0,
            "0 PDB violations": self.pdb_violations == 0,
            "0 duplicate evictions": self.duplicate_evictions == 0,
            "0 duplicate drains": self.duplicate_drains == 0,
            "resume in time": resume,
            "not stuck": None if self.stuck is None else not self.stuck,
            f"RSS growth < {RSS_GROWTH_TARGET_PCT:g} %": (
                None if self.rss_growth_pct is None else self.rss_growth_pct < RSS_GROWTH_TARGET_PCT
            ),
            **self.own_targets,
        }

    def missed(self) -> list[str]:
        return [name for name, met in self.targets().items() if met is False]

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["targets"] = {k: ("met" if v else "missed") if v is not None else "n/a" for k, v in self.targets().items()}
        return doc


def tracebacks(processes: Iterable[Spotq]) -> tuple[int, list[str]]:
    """Tracebacks in the processes' output, and the last line of each (the exception) where it can be read."""
    count, last_lines = 0, []
    for proc in processes:
        try:
            text = proc.log_path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if TRACEBACK not in line:
                continue
            count += line.count(TRACEBACK)
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            exception = str(doc.get("exception", "")).strip().splitlines()
            if exception:
                last_lines.append(f"{proc.label}: {exception[-1][:200]}")
    return count, last_lines


def rss_growth(sampler: ProcessSampler, label: str, *, warm_up: float = 0.2, window: float = 0.1) -> dict[str, Any]:
    """RSS growth of one process over a run: the mean of the last `window` share of its samples against the mean
    of the `window` share right after the first `warm_up` share (imports, caches and pools filled)."""
    rows = [s.rss_mb for s in sampler.samples.get(label, []) if s.rss_mb is not None]
    if len(rows) < 20:
        return {"samples": len(rows)}
    start = int(len(rows) * warm_up)
    size = max(1, int(len(rows) * window))
    baseline = statistics.fmean(rows[start : start + size])
    final = statistics.fmean(rows[-size:])
    return {
        "samples": len(rows),
        "baseline_mb": round(baseline, 1),
        "final_mb": round(final, 1),
        "peak_mb": round(max(rows), 1),
        "growth_pct": round((final - baseline) / baseline * 100, 1),
    }


def since(when: float | None, start: float) -> float | None:
    """Seconds from `start` to `when`; None when it never came."""
    return None if when is None else when - start


def resumed(
    found: Figures, waits: dict[str, float | None], what: str, *, target: float = RESUME_TARGET_SECONDS
) -> None:
    """Record how long the drains that had to resume took (node → seconds, None: never resumed)."""
    done = [w for w in waits.values() if w is not None]
    found.resume_seconds = round(max(done), 2) if done else None
    found.resume_never = sum(1 for w in waits.values() if w is None)
    found.resume_what = what
    found.resume_target = target
    found.details["resume_per_node"] = {n: (round(w, 2) if w is not None else None) for n, w in waits.items()}


def figure(
    scenario: str,
    title: str,
    interruptions: list[Interruption],
    poller: Seen,
    audit: Audit,
    deleted: dict[str, float],
    processes: list[Spotq],
    sampler: ProcessSampler,
    *,
    namespace: str,
    queue_left: int | None,
    serving: Iterable[Spotq] = (),
    alive: Collection[str] = (),
) -> Figures:
    """Every common figure; the scenario adds resume time and its own details."""
    found = Figures(scenario, title, interruptions=len(interruptions))
    start = min((i.event_time for i in interruptions), default=0.0)
    accepted = audit.accepted(namespace)
    found.pods = sum(len(i.pods) for i in interruptions)
    lost: list[dict[str, Any]] = []
    duplicate_drains: dict[str, str] = {}
    drained_after: list[float] = []
    for item in interruptions:
        seen = poller.nodes.get(item.node, NodeSeen())
        if seen.marked is not None and seen.marked <= item.deadline:
            found.marked += 1
        found.evicted_before_deadline += sum(
            1 for pod in item.pods if accepted.get(pod) and accepted[pod][0].at <= item.deadline
        )
        emptied = seen.empty_since(item.event_time)
        if emptied is not None and emptied <= item.deadline:
            found.drained_before_deadline += 1
        if emptied is not None:
            drained_after.append(emptied - item.event_time)
        stamps = [deleted[m] for m in item.messages if m in deleted]
        if item.messages and len(stamps) == len(item.messages):
            last = max(stamps)
            left = poller.pods_seen_after(item.node, last)
            if last < item.deadline and left:
                lost.append(
                    {
                        "node": item.node,
                        "deleted_at": round(last - item.event_time, 1),
                        "pods_left": left,
                        # What the cluster said meanwhile, s from the interruption: the drain record and pods.
                        "drain_record": [(round(t - item.event_time, 1), state) for t, state in seen.drain],
                        "drainer": [(round(t - item.event_time, 1), who) for t, who in seen.drainer],
                        "pods": [(round(t - item.event_time, 1), count) for t, count in seen.pods],
                    }
                )
        why = _duplicate_drain(item.node, seen, audit)
        if why:
            duplicate_drains[item.node] = why
    found.lost = len(lost)
    found.duplicate_drains = len(duplicate_drains)
    twice = [pod for pod, done in accepted.items() if len(done) > 1]
    found.duplicate_evictions = len(twice)
    found.pdb_violations = sum(b.violations() for b in poller.budgets.values())
    margins = [m for m in (b.worst_margin() for b in poller.budgets.values()) if m is not None]
    found.pdb_worst_margin = min(margins) if margins else None
    found.tracebacks, exceptions = tracebacks(processes)
    peak = sampler.peak_rss()
    found.rss_peak_mb = round(peak, 1) if peak is not None else None
    found.queue_left = queue_left
    found.stuck_why = _stuck(interruptions, poller, queue_left, sampler, serving, alive)
    found.stuck = bool(found.stuck_why)
    found.details.update(
        {
            "lost": lost,
            "slowest_drain_seconds": round(max(drained_after), 1) if drained_after else None,
            "duplicate_drains": duplicate_drains,
            # Each budget's (s from the first interruption, currentHealthy, desiredHealthy) on each change.
            "budgets": {
                name: [(round(t - start, 1), healthy, desired) for t, healthy, desired in b.samples]
                for name, b in poller.budgets.items()
            },
            "evicted_twice": sorted(twice)[:20],
            "exceptions": exceptions[:20],
            "poll_gaps": [(round(a - interruptions[0].event_time, 1), round(b - a, 1)) for a, b in poller.gaps]
            if interruptions
            else [],
            "requests_by_process": audit.by_user(),
            "processes": [
                {"label": p.label, "pod": p.pod, "ready": p.ready, "ended": p.ended, "how": p.how_ended}
                for p in processes
            ],
        }
    )
    return found


def _duplicate_drain(node: str, seen: NodeSeen, audit: Audit) -> str:
    spans = sorted(audit.drain_spans(node).items(), key=lambda kv: kv[1][0])
    for i, (user, (_, end)) in enumerate(spans):
        for other, (other_start, _) in spans[i + 1 :]:
            if other_start < end:
                return f"{short(user)} and {short(other)} at once ({end - other_start:.1f}s overlap)"
    finished = seen.first_drain("finished")
    if finished is not None:
        later = [r for r in audit.drain_requests(node) if r.received > finished + 0.5]
        if later:
            return f"drained again {later[0].received - finished:.1f}s after it was on record as finished"
    return ""


def _stuck(
    interruptions: list[Interruption],
    poller: Seen,
    queue_left: int | None,
    sampler: ProcessSampler,
    serving: Iterable[Spotq],
    alive: Collection[str],
) -> list[str]:
    why = []
    open_nodes = [
        i.node
        for i in interruptions
        if (seen := poller.nodes.get(i.node)) is not None
        and seen.deleted is None
        and (seen.pods[-1][1] if seen.pods else 0) > 0
        and seen.last_drain() not in FINAL_DRAIN_STATES
    ]
    if open_nodes:
        why.append(f"{len(open_nodes)} nodes left with pods and no final drain record")
    if queue_left:
        why.append(f"{queue_left} messages left in the queue")
    for proc in serving:
        rows = sampler.samples.get(proc.label, [])
        if proc.label not in alive:
            why.append(f"{proc.label} exited")
        elif not rows or rows[-1].ready != 200:
            why.append(f"{proc.label} not ready at the end")
    return why


def short(user: str) -> str:
    return user.rpartition(":")[2]


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")


Check = Callable[[], bool]
