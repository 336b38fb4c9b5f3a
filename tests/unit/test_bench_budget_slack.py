"""The benchmark's budget figure: allowance the PDBs gave that no eviction took, against the time they gave none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import budget_slack, report
from bench.budget_slack import BudgetSlack
from bench.observing import Observer


def test_unused_allowance_is_the_smaller_of_what_a_budget_allows_and_its_pods_waiting() -> None:
    slack = BudgetSlack()
    slack.budget("a", 3, 0.0, True)
    slack.pod("a1", "a", True, 0.0, True)
    slack.begin(0.0)
    assert slack.series[-1] == (0.0, 1, 1)  # allows 3, one pod waits: one eviction open
    slack.pod("a2", "a", True, 1.0, True)
    slack.pod("b1", "b", True, 1.0, True)  # b allows nothing (never seen): no allowance
    assert slack.series[-1] == (1.0, 2, 3)
    slack.pod("a1", "a", False, 2.0, True)  # evicted (terminating)
    slack.budget("a", 0, 2.0, True)
    assert slack.series[-1] == (2.0, 0, 2)
    slack.budget("a", -1, 3.0, True)  # a violated budget allows nothing, it does not owe
    assert slack.series[-1] == (2.0, 0, 2)


def test_nothing_is_recorded_before_the_wave_and_a_pod_counts_once() -> None:
    slack = BudgetSlack()
    slack.budget("a", 5, 0.0, False)
    slack.pod("a1", "a", True, 0.0, False)
    slack.pod("a1", "a", True, 0.5, False)  # an update of a waiting pod
    assert slack.series == []
    slack.begin(1.0)
    assert slack.series == [(1.0, 1, 1)]


def test_use_integrates_the_step_series_over_the_window() -> None:
    series = [(0.0, 4, 10), (10.0, 0, 6), (30.0, 2, 2), (40.0, 0, 0)]
    found = budget_slack.use(series, 0.0, 50.0)
    # unused: 4 for 10 s + 2 for 10 s over 50 s; pods waited 40 s, 20 of them with nothing allowed.
    assert found["unused_allowance_mean"] == pytest.approx((40 + 20) / 50)
    assert found["waited_seconds"] == 40
    assert found["budget_bound_share"] == pytest.approx(0.5)
    cut = budget_slack.use(series, 5.0, 20.0)  # only the window counts
    assert cut["unused_allowance_mean"] == pytest.approx(4 * 5 / 15, abs=0.01)
    assert cut["budget_bound_share"] == pytest.approx(10 / 15, abs=1e-3)
    assert budget_slack.use([], 0.0, 50.0)["unused_allowance_mean"] is None


def _pod(uid: str, node: str, *, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": uid, "labels": {"app": "app-000"}}
    if terminating:
        meta["deletionTimestamp"] = "2026-12-03T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {"phase": "Running"}}


def _pdb(allowed: int) -> dict[str, Any]:
    status = {"currentHealthy": 2, "desiredHealthy": 1, "disruptionsAllowed": allowed}
    return {"metadata": {"name": "app-000"}, "status": status}


def test_observer_feeds_the_pdbs_allowance_and_the_pods_waiting_on_interrupted_nodes() -> None:
    observer = Observer(
        server_url="https://127.0.0.1:1", ca=Path("ca"), cert=Path("c"), key=Path("k"), namespace="bench",
        interrupted={"spot-1"}, taint_key=None, min_available={}, wanted_pods=2,
    )  # fmt: skip
    observer._on_pod("ADDED", _pod("p1", "spot-1"), 1.0)
    observer._on_pod("ADDED", _pod("p2", "spot-1"), 1.0)
    observer._on_pod("ADDED", _pod("p3", "on-demand-1"), 1.0)  # not on an interrupted node: does not wait
    observer._on_pdb("ADDED", _pdb(1), 1.0)
    observer.begin(2.0)
    observer._on_pod("MODIFIED", _pod("p1", "spot-1", terminating=True), 3.0)
    observer._on_pdb("MODIFIED", _pdb(0), 3.0)
    observer._on_pdb("MODIFIED", _pdb(1), 5.0)  # a replacement is Ready: one more allowed
    observer._on_pod("DELETED", _pod("p2", "spot-1"), 6.0)
    assert observer.snapshot()["budget_slack"] == [(2.0, 1, 2), (3.0, 1, 1), (3.0, 0, 1), (5.0, 1, 1), (6.0, 0, 0)]


def test_the_summary_shows_the_budget_figure_per_contender() -> None:
    phase = {"budget_use": {"unused_allowance_mean": 0.42, "budget_bound_share": 0.97, "waited_seconds": 100.0}}
    row = next(r for r in report.ROWS if r.title.startswith("PDB allowance unused"))
    assert row.cell(phase, {}) == "0.4 (97%)"
    assert row.cell({}, {}) == "-"
