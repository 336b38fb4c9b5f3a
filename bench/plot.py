"""Timeline PNG of one scale: nodes over time by state (the wave moving through the cluster), one panel per
contender on the same time axis (spotq, `kubectl drain` x10, aws-node-termination-handler tuned and defaults), with
the share of the workload's pods evicted and Ready on the remaining nodes, the deadline (event + 120 s) and the
last moment an eviction still leaves a pod its whole grace.

    python -m bench.plot bench/results/200x20.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STATES = ("queued", "received", "tainted+cordoned", "drained")
PANELS = {
    "spotq": ("spotq", STATES),
    "kubectl": ("kubectl drain x10 (NTH's drain flags)", ("waiting for a worker", "kubectl started", "cordoned",
                                                          "drained")),
    "nth-tuned": ("aws-node-termination-handler tuned (50 workers, QPS 100 / burst 200)", STATES),
    "nth-defaults": ("aws-node-termination-handler defaults (10 workers, QPS 5 / burst 10)", STATES),
}  # fmt: skip
COLOURS = ("#d9d9d9", "#fdae61", "#d7191c", "#1a9641")


def _counts(rows: list[dict[str, Any]], start: float, grid: list[float]) -> list[list[int]]:
    """For each state, how many nodes are in it at each grid time (a node is in its latest reached state)."""
    series = [[0] * len(grid) for _ in STATES]
    for row in rows:
        marks = [row.get("enqueued"), row.get("received"), row.get("marked"), row.get("drained")]
        offsets = [None if m is None else m - start for m in marks]
        for i, t in enumerate(grid):
            state = -1
            for s, offset in enumerate(offsets):
                if offset is not None and offset <= t:
                    state = s
            if state >= 0:
                series[state][i] += 1
    return series


def timeline(result: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [(name, result[name]) for name in PANELS if result.get(name) and result[name].get("rows")]
    if not phases:
        raise ValueError("no phase with per-node rows in this result")
    end = 0.0
    for _, phase in phases:
        start = min(r["enqueued"] for r in phase["rows"])
        times = [r[k] - start for r in phase["rows"] for k in ("drained", "marked") if r.get(k) is not None]
        end = max(end, max(times, default=0.0), phase.get("capacity_restored_seconds") or 0.0)
    end = min(max(end * 1.05 + 1, 125.0), 3600)  # the deadline always in view
    steps = 600
    grid = [end * i / steps for i in range(steps + 1)]
    fig, axes = plt.subplots(len(phases), 1, figsize=(11, 3.6 * len(phases)), sharex=True, squeeze=False)
    for ax, (name, phase) in zip(axes[:, 0], phases, strict=True):
        rows = phase["rows"]
        start = min(r["enqueued"] for r in rows)
        series = _counts(rows, start, grid)
        title, labels = PANELS[name]
        ax.stackplot(grid, series, labels=list(labels), colors=COLOURS, alpha=0.9)
        deadline = phase.get("deadline") or {}
        at = deadline.get("deadline_after_start_seconds") or 120.0
        ax.axvline(at, color="black", linestyle="--", linewidth=1)
        ax.text(at - 1, len(rows) * 0.5, "deadline (event + 120 s)", fontsize=7, rotation=90, ha="right", va="center")
        if deadline.get("grace_seconds"):
            last = at - deadline["grace_seconds"]
            ax.axvline(last, color="black", linestyle=":", linewidth=1)
            ax.text(last - 1, len(rows) * 0.5, "last eviction with its whole grace", fontsize=7, rotation=90,
                    ha="right", va="center")  # fmt: skip
        ax.set_ylabel("nodes")
        ax.set_ylim(0, len(rows))
        all_drained = phase.get("all_drained_seconds") or phase.get("projected_all_drained_seconds")
        graceful = deadline.get("evicted_with_grace_before_deadline")
        window = "" if graceful is None else f"; evicted with grace before the deadline {graceful}/{deadline['pods']}"
        ax.set_title(f"{title}\n{len(rows)} nodes x {result['pods_per_node']} pods — all drained "
                     f"{'-' if all_drained is None else f'{all_drained:.0f} s'}{window}", fontsize=9)  # fmt: skip
        capacity = (phase.get("timeline") or {}).get("capacity") or []
        if capacity:
            twin = ax.twinx()
            wanted = result["nodes"] * result["pods_per_node"]
            twin.step([t for t, _ in capacity], [100 * c / wanted for _, c in capacity], where="post",
                      color="#2c7bb6", linewidth=1.2, label="workload pods Ready on remaining nodes")  # fmt: skip
            evictions = deadline.get("eviction_offsets") or []
            if evictions:
                twin.step([0.0, *evictions], [100 * i / wanted for i in range(len(evictions) + 1)], where="post",
                          color="#7b3294", linewidth=1.0, linestyle="-.", label="pods evicted")  # fmt: skip
            twin.set_ylabel("% of the workload's pods", color="#2c7bb6")
            twin.set_ylim(0, 105)
            twin.legend(loc="lower right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8, ncol=4)
    axes[-1, 0].set_xlabel("seconds after the warnings were sent")
    axes[-1, 0].set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    for name in argv:
        path = Path(name)
        print(timeline(json.loads(path.read_text()), path.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
