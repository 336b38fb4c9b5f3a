"""Who held the evictions back: the PodDisruptionBudgets, or the contender?

Per budget the observer keeps what its status allows now (`disruptionsAllowed`) and how many of its pods still wait
on an interrupted node (bound there, not yet terminating). The smaller of the two is allowance no accepted eviction
has used yet (an eviction under way counts as unused until the API server accepts it). Summed over the budgets it
is a step series; `use` integrates it over the window. A contender that evicts as fast as the budgets let it keeps
the unused allowance near 0 and is budget-bound nearly all the time its pods wait: then only a faster turnover of
the cluster (replacements scheduled and Ready, the disruption controller's recount) gets more pods out, not another
eviction order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# (time, allowance unused summed over the budgets, pods waiting on interrupted nodes)
Point = tuple[float, int, int]


@dataclass
class BudgetSlack:
    """Fed by the observer's watch handlers (under its lock); `series` grows only while `counting`."""

    allowed: dict[str, int] = field(default_factory=dict)  # budget → disruptionsAllowed
    waiting: dict[str, int] = field(default_factory=dict)  # budget → its pods waiting on interrupted nodes
    series: list[Point] = field(default_factory=list)
    _pod_waits: dict[str, str] = field(default_factory=dict)  # pod uid → its budget, while it waits
    _unused_total: int = 0  # the sum of _unused over the budgets, kept as each one changes
    _waiting_total: int = 0

    def _unused(self, budget: str) -> int:
        return min(max(self.allowed.get(budget, 0), 0), self.waiting.get(budget, 0))

    def _change(self, budget: str, allowed: int | None = None, waiting: int = 0) -> None:
        """Set a budget's allowance and/or move its waiting count, keeping the totals."""
        before = self._unused(budget)
        if allowed is not None:
            self.allowed[budget] = allowed
        if waiting:
            self.waiting[budget] = self.waiting.get(budget, 0) + waiting
            self._waiting_total += waiting
        self._unused_total += self._unused(budget) - before

    def _record(self, stamp: float, counting: bool) -> None:
        if not counting:
            return
        point = (stamp, self._unused_total, self._waiting_total)
        if not self.series or self.series[-1][1:] != point[1:]:
            self.series.append(point)

    def budget(self, name: str, allowed: int, stamp: float, counting: bool) -> None:
        self._change(name, allowed=allowed)
        self._record(stamp, counting)

    def pod(self, uid: str, budget: str | None, waits: bool, stamp: float, counting: bool) -> None:
        """`budget`: the one covering the pod (None: none); `waits`: bound to an interrupted node, not terminating."""
        before = self._pod_waits.get(uid)
        now = budget if waits else None
        if before == now:
            return
        if before is not None:
            self._change(before, waiting=-1)
            del self._pod_waits[uid]
        if now is not None:
            self._change(now, waiting=1)
            self._pod_waits[uid] = now
        self._record(stamp, counting)

    def begin(self, stamp: float) -> None:
        self._record(stamp, True)


def use(series: Sequence[Sequence[float]], start: float, end: float) -> dict[str, Any]:
    """Over [start, end]: the mean allowance left unused, and the share of the time pods waited in which every
    budget with waiting pods allowed nothing (budget-bound). A step series: each point holds until the next."""
    if end <= start or not series:
        return {"unused_allowance_mean": None, "budget_bound_share": None, "waited_seconds": 0.0}
    unused_area = waited = held = 0.0
    for i, (at, unused, waiting) in enumerate(series):
        until = series[i + 1][0] if i + 1 < len(series) else end
        span = min(until, end) - max(at, start)
        if span <= 0:
            continue
        unused_area += unused * span
        if waiting > 0:
            waited += span
            held += span if unused == 0 else 0.0
    return {
        "unused_allowance_mean": round(unused_area / (end - start), 2),
        "budget_bound_share": round(held / waited, 3) if waited else None,
        "waited_seconds": round(waited, 2),
    }
