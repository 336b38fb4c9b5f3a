"""What a run leaves behind: each scale's JSON and timeline PNG, and summary.md, the Markdown table of every scale
found in the results folder (one column per scale); plus the one-line summary printed after each phase.

Renders the dicts phases.py and figures.py build; computes nothing new.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.console import say


def phase_line(name: str, f: dict[str, Any]) -> None:
    """One progress line with a phase's headline figures."""
    say(
        f"  {name}: marked {f['marked']}/{f['nodes']}, drained {f['drained']}/{f['nodes']}, "
        f"enqueued→marked p50/p99 {f['enqueued_to_marked']['p50']}/{f['enqueued_to_marked']['p99']}s, "
        f"all drained {f['all_drained_seconds']}s, within 120s {f['share_drained_within_120s']}, "
        f"PDB violations {f['pdb_violations']}, requests/pod {f.get('requests_per_evicted_pod')}"
    )


def table(results: list[dict[str, Any]], index: dict[str, Any] | None, host: dict[str, Any]) -> str:
    """The Markdown figures table (one column per scale)."""

    def cell(scale: dict[str, Any], path: str, fmt: str = "{}") -> str:
        value: Any = scale
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                return "-"
        return fmt.format(value)

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("nodes interrupted together x pods per node", lambda s: f"{s['nodes']} x {s['pods_per_node']}"),
        ("tainted + cordoned", lambda s: f"{cell(s, 'spotq.marked')}/{s['nodes']}"),
        ("enqueued → received p50 / p99 / max, s", lambda s: _triple(s, "spotq.enqueued_to_received")),
        ("received → tainted+cordoned p50 / p99 / max, s", lambda s: _triple(s, "spotq.received_to_marked")),
        ("enqueued → tainted+cordoned p50 / p99 / max, s", lambda s: _triple(s, "spotq.enqueued_to_marked")),
        ("enqueued → drained p50 / p99 / max, s", lambda s: _triple(s, "spotq.enqueued_to_drained")),
        ("drained within 60 s / 120 s of event time",
         lambda s: f"{cell(s, 'spotq.drained_within_60s_of_event')} / {cell(s, 'spotq.drained_within_120s_of_event')}"
         f" of {s['nodes']}"),
        ("PDB violations (lowest currentHealthy - desiredHealthy)",
         lambda s: f"{cell(s, 'spotq.pdb_violations')} ({cell(s, 'spotq.pdb_lowest_margin')})"),
        ("all replacements Ready on remaining nodes, s", lambda s: cell(s, "spotq.capacity_restored_seconds")),
        ("workload pods Ready elsewhere at +120 s: spotq / kubectl x10", lambda s: _ready_at(s, 120)),
        ("API requests per evicted pod (audit log)", lambda s: cell(s, "spotq.requests_per_evicted_pod")),
        ("spotq CPU seconds / peak RSS MB", lambda s: f"{cell(s, 'spotq.spotq_cpu_seconds')} / "
         f"{cell(s, 'spotq.spotq_vmhwm_mb')}"),
        ("kubectl drain x10: all drained, s", lambda s: _kubectl_all(s)),
        ("kubectl drain x10: drained within 120 s of event",
         lambda s: f"{cell(s, 'kubectl.drained_within_120s_of_event')} of {s['nodes']}"),
        ("kubectl drain x10: API requests per evicted pod", lambda s: cell(s, "kubectl.requests_per_evicted_pod")),
        ("spotq faster than kubectl x10 (all drained)", lambda s: cell(s, "ratio_vs_kubectl", "{:.1f}x")),
        ("nodes drained within 120 s of event: spotq / kubectl x10", lambda s: _within_ratio(s)),
        ("taint+cordon ceiling (minimal client), nodes/s", lambda s: cell(s, "ceiling.marks.rate_per_second")),
        ("spotq taint+cordon rate (first warning sent → last node marked), nodes/s",
         lambda s: cell(s, "spotq.mark_rate_per_second")),
        ("eviction ceiling (minimal client), evictions/s", lambda s: cell(s, "ceiling.client.rate_per_second")),
        ("spotq eviction rate, evictions/s (share of ceiling)",
         lambda s: f"{cell(s, 'ceiling.spotq.eviction_rate_per_second')} ({cell(s, 'ceiling.spotq_share', '{:.0%}')})"),
        ("SQS receive+delete ceiling, msg/s (ElasticMQ / moto)", lambda s: _sqs(s)),
    ]  # fmt: skip
    lines = ["| figure | " + " | ".join(r["scale"] for r in results) + " |", "|---|" + "---|" * len(results)]
    for title, fn in rows:
        lines.append(f"| {title} | " + " | ".join(fn(r) for r in results) + " |")
    if index:
        mb = index.get("after_list", {})
        lines.append(
            f"\nspotq RSS with {index.get('indexed')} nodes indexed: {mb.get('VmRSS', 0):.0f} MB "
            f"(peak {mb.get('VmHWM', 0):.0f} MB; {index['empty_cluster'].get('VmRSS', 0):.0f} MB on an empty cluster)"
        )
    lines.append(
        f"\nMachine: {host['nproc']} cores ({host['cpu_model']}), {host['memory_gib']} GiB, Python {host['python']}."
    )
    return "\n".join(lines)


def _within_ratio(scale: dict[str, Any]) -> str:
    spotq = (scale.get("spotq") or {}).get("drained_within_120s_of_event")
    kubectl = (scale.get("kubectl") or {}).get("drained_within_120s_of_event")
    if spotq is None or not kubectl:
        return "-"
    return f"{spotq / kubectl:.1f}x"


def _ready_at(scale: dict[str, Any], seconds: float) -> str:
    """Share of the workload's pods Running+Ready on the remaining nodes `seconds` after the warnings."""
    wanted = scale["nodes"] * scale["pods_per_node"]
    parts = []
    for phase in ("spotq", "kubectl"):
        points = ((scale.get(phase) or {}).get("timeline") or {}).get("capacity") or []
        before = [count for t, count in points if t <= seconds]
        parts.append(f"{before[-1] / wanted:.0%}" if before else "-")
    return " / ".join(parts)


def _triple(scale: dict[str, Any], path: str) -> str:
    phase, key = path.split(".")
    s = (scale.get(phase) or {}).get(key) or {}
    return " / ".join("-" if s.get(q) is None else f"{s[q]:.2f}" for q in ("p50", "p99", "max"))


def _kubectl_all(scale: dict[str, Any]) -> str:
    k = scale.get("kubectl") or {}
    if k.get("all_drained_seconds") is not None:
        return f"{k['all_drained_seconds']:.0f}"
    if k.get("projected_all_drained_seconds") is not None:
        return f"~{k['projected_all_drained_seconds']:.0f} (projected)"
    return "-"


def _sqs(scale: dict[str, Any]) -> str:
    rows = {r["endpoint"]: r for r in scale.get("sqs_ceiling") or []}
    parts = [str((rows.get(name) or {}).get("receive_delete_per_second", "-")) for name in ("elasticmq", "moto")]
    return " / ".join(parts)


def saved_results(out: Path) -> list[dict[str, Any]]:
    """Every scale's latest JSON in `out`, smallest first, so the table shows what is there."""
    found = [json.loads(p.read_text()) for p in out.glob("[0-9]*x[0-9]*.json")]
    return sorted(found, key=lambda r: (r["nodes"] * r["pods_per_node"], r["nodes"]))


def write_scale(result: dict[str, Any], out: Path) -> None:
    """`<scale>.json` (every figure and every node's times) and `<scale>.png` (the timeline, if matplotlib is there)."""
    label = result["scale"]
    (out / f"{label}.json").write_text(json.dumps(result, indent=1, default=str))
    try:
        from bench import plot

        plot.timeline(result, out / f"{label}.png")
    except ImportError as exc:
        say(f"no plot ({exc}); pip install matplotlib")


def write_summary(out: Path, index: dict[str, Any] | None, host: dict[str, Any]) -> str:
    """summary.md for every scale in `out`; the index RSS from this run, else the one saved before."""
    if index:
        (out / "index-rss.json").write_text(json.dumps(index, indent=1))
    elif (out / "index-rss.json").exists():
        index = json.loads((out / "index-rss.json").read_text())
    summary = table(saved_results(out), index, host)
    (out / "summary.md").write_text(summary + "\n")
    return summary
