"""PodDisruptionBudgets as spotq sees them: from a watch of their status, admit evictions only while a budget allows
a disruption, earliest drain deadline first.

Without this, every drain would ask the Eviction API for every pod at once and retry each refusal (429) on a
timer: in a mass interruption most of those requests are refused, they crowd out the requests that can succeed,
and a pod's turn does not follow its node's deadline. Worse, many evictions under one budget at once conflict on
its status inside the API server. With it, a few evictions per budget are in flight, budgets proceed in parallel,
and the refusals that remain are the races between a status update and the next eviction. How many per budget
follows how many budgets have work (see IN_FLIGHT_TARGET), unless set.
While the watch is not running (no RBAC to list PDBs, or not started), `turn` lets every eviction through and
draining falls back to retrying 429s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from spotq import gate
from spotq.observability import metrics

JSON = dict[str, Any]
BudgetKey = tuple[str, str]  # (namespace, name)


def _matches(selector: JSON | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if selector is None:
        return False  # policy/v1: a null selector selects no pods (an empty one selects all)
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key", ""), expression.get("operator"), expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# Evictions in flight under one budget, by default: about IN_FLIGHT_TARGET across the budgets that have pods waiting
# or in flight, between 1 and IN_FLIGHT_PER_BUDGET_MAX each (SPOTQ_DRAIN__EVICTIONS_IN_FLIGHT_PER_BUDGET fixes one
# count instead). Each accepted eviction rewrites the PDB's status; concurrent ones under one budget conflict inside
# the API server, which retries each loser after 500 ms (EvictionsRetry). With many budgets at work one each keeps
# the server busy without those pauses: at 200x20 (40 budgets) one at a time evicted the most pods in time, and a
# target of 40 (2 to 4 each whenever fewer than 40 had work) evicted fewer than a target of 20. With few, one each
# leaves the server idle between answers: at 50x10 (5 budgets) four each drained faster (all measured:
# bench/results/order-evaluation/evictions-per-budget-automatic.md).
AUTOMATIC = 0
IN_FLIGHT_TARGET = 20
IN_FLIGHT_PER_BUDGET_MAX = 4
# covering()'s remembered answers, at most.
_COVERS_KEPT = 10_000


def per_budget(target: int, busy: int) -> int:
    """Evictions in flight under each of `busy` budgets for about `target` in flight across them."""
    return max(1, min(IN_FLIGHT_PER_BUDGET_MAX, math.ceil(target / max(busy, 1))))


class _Budget:
    def __init__(self, selector: JSON | None, in_flight: Callable[[], int], changed: Callable[[_Budget], None]) -> None:
        self.selector = selector
        self.in_flight = in_flight  # evictions it may have in flight now
        self.changed = changed  # told when it may have started or stopped having work
        self.allowed: int | None = None  # status.disruptionsAllowed; None until the controller has reported it
        self.disrupted: frozenset[str] = frozenset()  # status.disruptedPods: pods whose eviction it admitted
        self.outstanding = 0  # evictions admitted whose request has not returned yet
        self.waiters: gate.Gate[tuple[float, int]] = gate.Gate(hand_on=self.done)
        self.progress = 0  # counts status updates and admissions: a waiter sees whether the budget moved
        self.removed = False  # the PDB is gone: it no longer counts among the budgets at work

    @property
    def room(self) -> int:
        allowed = self.allowed if self.allowed is not None else 0
        return min(allowed, self.in_flight()) - self.outstanding

    @property
    def busy(self) -> bool:
        return self.outstanding > 0 or self.waiters.waiting > 0

    def admit(self) -> None:
        """Let waiters in while there is room; each is counted as outstanding from its grant."""
        while self.room > 0 and self.waiters.grant():
            self.outstanding += 1
            self.progress += 1

    def done(self) -> None:
        """An admitted eviction ended (or its waiter left as it was admitted): its room goes to the next."""
        self.outstanding -= 1
        self.admit()
        self.changed(self)


class Budgets:
    def __init__(self, in_flight_per_budget: int = AUTOMATIC, in_flight_target: int = IN_FLIGHT_TARGET) -> None:
        self._fixed = in_flight_per_budget if in_flight_per_budget != AUTOMATIC else None
        self._target = in_flight_target
        self._per_budget = self._fixed or per_budget(in_flight_target, 0)
        metrics.EVICTIONS_IN_FLIGHT_PER_BUDGET.set(self._per_budget)
        metrics.BUDGETS_AT_WORK.set(0)
        self._busy: set[_Budget] = set()  # budgets with evictions waiting or in flight
        self._budgets: dict[BudgetKey, _Budget] = {}
        self._by_namespace: dict[str, set[str]] = {}
        # covering()'s answers by (namespace, pod labels): a wave's pods share a few label sets, and matching each
        # pod against every budget of its namespace was 8.6 % of spotq's CPU samples in a 200x20 wave's first 6 s
        # (py-spy). Emptied whenever a budget is added or removed or its selector changes; a status update (every
        # eviction) keeps it.
        self._covers: dict[tuple[str, frozenset[tuple[str, str]]], BudgetKey | None] = {}
        self.active = False  # True while the watch keeps `_budgets` current

    # -- fed by the watch ---------------------------------------------------------------------------------------

    def update(self, pdb: JSON) -> None:
        meta = pdb.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        budget = self._budgets.get(key)
        selector = (pdb.get("spec") or {}).get("selector")
        if budget is None or budget.selector != selector:
            self._covers.clear()
        if budget is None:
            budget = self._budgets[key] = _Budget(selector, lambda: self._per_budget, self._changed)
        self._by_namespace.setdefault(key[0], set()).add(key[1])
        budget.selector = selector
        status = pdb.get("status") or {}
        observed = status.get("observedGeneration", 0) >= meta.get("generation", 0)
        budget.allowed = int(status.get("disruptionsAllowed", 0)) if observed else None
        budget.disrupted = frozenset(status.get("disruptedPods") or {})
        budget.progress += 1
        budget.admit()

    def remove(self, namespace: str, name: str) -> None:
        budget = self._budgets.pop((namespace, name), None)
        self._by_namespace.get(namespace, set()).discard(name)
        self._covers.clear()
        if budget is not None:
            budget.removed = True
            budget.waiters.open()  # nothing guards these pods any more: let them try
            self._busy.discard(budget)
            self._recount()

    def replace_all(self, pdbs: list[JSON]) -> None:
        keep = {
            ((p.get("metadata") or {}).get("namespace", ""), (p.get("metadata") or {}).get("name", "")) for p in pdbs
        }
        for key in [k for k in self._budgets if k not in keep]:
            self.remove(*key)
        for pdb in pdbs:
            self.update(pdb)

    def stop(self) -> None:
        """The watch ended: release every waiter; draining retries refusals on its own until it is back."""
        self.active = False
        for budget in self._budgets.values():
            budget.waiters.open()

    # -- how many in flight per budget ---------------------------------------------------------------------------

    @property
    def in_flight_per_budget(self) -> int:
        return self._per_budget

    def _changed(self, budget: _Budget) -> None:
        if budget.busy and not budget.removed:
            self._busy.add(budget)
        else:
            self._busy.discard(budget)
        self._recount()

    def _recount(self) -> None:
        """Follow the number of budgets at work; when each may have more in flight, let their waiters in."""
        metrics.BUDGETS_AT_WORK.set(len(self._busy))
        if self._fixed is not None:
            return
        now = per_budget(self._target, len(self._busy))
        grew, self._per_budget = now > self._per_budget, now
        metrics.EVICTIONS_IN_FLIGHT_PER_BUDGET.set(now)
        if grew:
            for budget in list(self._busy):
                budget.admit()

    # -- used by draining ---------------------------------------------------------------------------------------

    def covering(self, namespace: str, labels: Mapping[str, str]) -> BudgetKey | None:
        """The one budget that covers a pod; None for none, or for several (the Eviction API refuses those)."""
        cache_key = (namespace, frozenset(labels.items()))
        if cache_key in self._covers:
            return self._covers[cache_key]
        found = [
            (namespace, name)
            for name in self._by_namespace.get(namespace, ())
            if _matches(self._budgets[(namespace, name)].selector, labels)
        ]
        cover = found[0] if len(found) == 1 else None
        if len(self._covers) >= _COVERS_KEPT:
            self._covers.clear()  # every rollout brings a new pod-template-hash: keep the memory bounded
        self._covers[cache_key] = cover
        return cover

    def admitted(self, key: BudgetKey | None, pod: str) -> bool:
        """The budget lists `pod` among its disrupted pods: the API server admitted an eviction of it (the
        disruption is spent and counted for up to two minutes) whether or not the pod was then deleted."""
        budget = self._budgets.get(key) if key is not None and self.active else None
        return budget is not None and pod in budget.disrupted

    @asynccontextmanager
    async def turn(self, key: BudgetKey | None, order: tuple[float, int], patience: float) -> AsyncIterator[None]:
        """Wait until the budget has room and hold it while the eviction runs (an exception means it was not
        accepted). Waiters go in `order`: (deadline, drain number), so the earliest deadline goes first and, among
        equal deadlines, one node's pods go together and nodes finish one after another instead of all at the end.

        A waiter gives up waiting and tries anyway only when its budget has shown no progress (no status update,
        no admission) for `patience` s. Without a known budget or a running watch there is nothing to wait for.
        """
        budget = self._budgets.get(key) if key is not None and self.active else None
        if budget is None:
            yield
            return
        admitted = False  # True when the gate's grant already counted this eviction as outstanding
        if budget.waiters.waiting or budget.room <= 0:
            try:
                with budget.waiters.queued(order) as ticket:
                    self._changed(budget)
                    # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as the
                    # future completes, and a drain past its deadline would then never end.
                    while not ticket.done():
                        seen = budget.progress
                        await asyncio.wait([ticket], timeout=patience)
                        if not ticket.done() and budget.progress == seen:
                            break  # a lost watch event? Try anyway: the API server has the last word.
                admitted = gate.granted(ticket)
            finally:
                self._changed(budget)  # a waiter that left (its drain ended) may leave its budget without work
        if not admitted:
            budget.outstanding += 1
            budget.progress += 1
            self._changed(budget)
        try:
            yield
        except BaseException:
            budget.done()
            raise
        if budget.allowed is not None:
            # Accepted: the API server spent one disruption; its status update with the same news may lag.
            budget.allowed = max(0, budget.allowed - 1)
        budget.done()

    def reorder(self, drain: int, deadline: float) -> None:
        """Drain number `drain` now ends at `deadline` (moved earlier): its waiting evictions take that place in
        the queues."""
        for budget in self._budgets.values():
            budget.waiters.rekey(lambda order: (deadline, drain) if order[1] == drain else order)
