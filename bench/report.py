"""What a run leaves behind: each scale's JSON and timeline PNG, and summary.md (every scale found in the results
folder: one table per scale with a column per contender and spotq's ratios to NTH, then the API server's ceilings
and the environment's own figures); plus the one-line summary printed after each phase.

Renders the dicts phases.py and figures.py build; computes nothing new but ratios and the ceiling's bound.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.console import say

# The contenders' columns, in order: the phase's key in <scale>.json and its heading.
CONTENDERS = (
    ("spotq", "spotq"),
    ("kubectl", "kubectl drain x10"),
    ("nth-tuned", "NTH tuned"),
    ("nth-defaults", "NTH defaults"),
)
# spotq is compared with these (a ratio column each).
RIVALS = (("nth-tuned", "NTH tuned"), ("nth-defaults", "NTH defaults"), ("kubectl", "kubectl x10"))


def phase_line(name: str, f: dict[str, Any]) -> None:
    """One progress line with a phase's headline figures."""
    d = f.get("deadline") or {}
    say(
        f"  {name}: marked {f['marked']}/{f['nodes']}, drained {f['drained']}/{f['nodes']}, "
        f"enqueued→marked p50/p99 {f['enqueued_to_marked']['p50']}/{f['enqueued_to_marked']['p99']}s, "
        f"all drained {f['all_drained_seconds']}s, within 120s {f['share_drained_within_120s']}, "
        f"evicted with grace before the deadline {d.get('evicted_with_grace_before_deadline')}/{d.get('pods')}, "
        f"PDB violations {f['pdb_violations']}, requests/pod {f.get('requests_per_evicted_pod')}"
    )


def dig(value: Any, path: str) -> Any:
    """`value["a"]["b"]` for path "a.b"; None where a step is missing."""
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _num(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


@dataclass(frozen=True)
class Row:
    """One figure: its cell for a phase, and (for the ratio columns) the number to compare and which way is better."""

    title: str
    cell: Callable[[dict[str, Any], dict[str, Any]], str]  # (phase, scale) → text
    key: Callable[[dict[str, Any], dict[str, Any]], float | None] | None = None  # (phase, scale) → number
    lower_is_better: bool = True


def _triple(path: str) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    def cell(phase: dict[str, Any], scale: dict[str, Any]) -> str:
        s = dig(phase, path) or {}
        return " / ".join("-" if s.get(q) is None else f"{s[q]:.2f}" for q in ("p50", "p99", "max"))

    return cell


def _of(path: str, total: str) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    def cell(phase: dict[str, Any], scale: dict[str, Any]) -> str:
        value, whole = dig(phase, path), dig(phase, total)
        return "-" if value is None else f"{value}/{whole}"

    return cell


def _plain(path: str, fmt: str = "{}") -> Callable[[dict[str, Any], dict[str, Any]], str]:
    return lambda phase, scale: _num(dig(phase, path), fmt)


def _key(path: str) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    return lambda phase, scale: dig(phase, path)


def _all_drained(phase: dict[str, Any], scale: dict[str, Any]) -> str:
    if phase.get("all_drained_seconds") is not None:
        return f"{phase['all_drained_seconds']:.0f}"
    if phase.get("projected_all_drained_seconds") is not None:
        return f"~{phase['projected_all_drained_seconds']:.0f} (projected)"
    if phase.get("stopped_by_limit"):
        return f"not within {phase.get('phase_seconds', 0):.0f}"
    return "-"


def ready_at(phase: dict[str, Any], wanted: int, seconds: float = 120) -> float | None:
    """Share of the workload's pods Running+Ready on the remaining nodes `seconds` after the warnings."""
    points = dig(phase, "timeline.capacity") or []
    before = [count for t, count in points if t <= seconds]
    return before[-1] / wanted if before and wanted else None


def _ready_cell(phase: dict[str, Any], scale: dict[str, Any]) -> str:
    return _num(ready_at(phase, scale["nodes"] * scale["pods_per_node"]), "{:.0%}")


def _budget_use(phase: dict[str, Any], scale: dict[str, Any]) -> str:
    use = phase.get("budget_use") or {}
    if use.get("unused_allowance_mean") is None:
        return "-"
    return f"{use['unused_allowance_mean']:.1f} ({_num(use.get('budget_bound_share'), '{:.0%}')})"


# The start of the wave: how soon the first pods leave, and how many in its first seconds.
EARLY_SECONDS = 10


def first_evictions(phase: dict[str, Any], seconds: float = EARLY_SECONDS) -> tuple[float, int] | None:
    """When the first eviction was accepted, and how many were within `seconds`, after the first warning sent."""
    offsets = dig(phase, "deadline.eviction_offsets")
    if not offsets:
        return None
    return min(offsets), sum(1 for t in offsets if t <= seconds)


def _first_evictions(phase: dict[str, Any], scale: dict[str, Any]) -> str:
    found = first_evictions(phase)
    return "-" if found is None else f"{found[0]:.2f} / {found[1]}"


def _early_evictions(phase: dict[str, Any], scale: dict[str, Any]) -> float | None:
    found = first_evictions(phase)
    return None if found is None else found[1]


def _load(phase: dict[str, Any], scale: dict[str, Any]) -> str:
    return f"{_num(phase.get('load_average_before'))} → {_num(phase.get('load_average_after'))}"


def _cpu_rss(phase: dict[str, Any], scale: dict[str, Any]) -> str:
    who = phase.get("who", "")
    if who == "spotq":
        return f"{_num(phase.get('spotq_cpu_seconds'))} / {_num(phase.get('spotq_vmhwm_mb'))}"
    if who.startswith("nth"):
        return f"{_num(phase.get('nth_cpu_seconds'))} / {_num(phase.get('nth_peak_rss_mb'))}"
    return "-"


ROWS = (
    Row("tainted+cordoned", _of("marked", "nodes"), _key("marked"), lower_is_better=False),
    Row("enqueued → received p50 / p99 / max, s", _triple("enqueued_to_received"), _key("enqueued_to_received.p99")),
    Row("enqueued → tainted+cordoned p50 / p99 / max, s", _triple("enqueued_to_marked"),
        _key("enqueued_to_marked.p99")),
    Row("enqueued → tainted+cordoned as the node watch saw it, p50 / p99 / max, s", _triple("enqueued_to_marked_seen"),
        _key("enqueued_to_marked_seen.p99")),
    Row("enqueued → drained p50 / p99 / max, s", _triple("enqueued_to_drained"), _key("enqueued_to_drained.p99")),
    Row("all nodes drained, s", _all_drained,
        lambda p, s: p.get("all_drained_seconds") or p.get("projected_all_drained_seconds")),
    Row("all replacements Ready on the remaining nodes, s", _plain("capacity_restored_seconds"),
        _key("capacity_restored_seconds")),
    Row("**nodes fully drained before the deadline**", _of("drained_within_120s_of_event", "nodes"),
        _key("drained_within_120s_of_event"), lower_is_better=False),
    Row("**pods evicted early enough to finish their grace before the deadline**",
        _of("deadline.evicted_with_grace_before_deadline", "deadline.pods"),
        _key("deadline.evicted_with_grace_before_deadline"), lower_is_better=False),
    Row("pods evicted too late to finish their grace", _plain("deadline.evicted_grace_cut_short")),
    Row("pods not evicted by the deadline", _plain("deadline.not_evicted_by_deadline"),
        _key("deadline.not_evicted_by_deadline")),
    Row("**pods still on an interrupted node at the deadline**", _plain("deadline.bound_at_deadline"),
        _key("deadline.bound_at_deadline")),
    Row("workload pods Ready elsewhere at +120 s", _ready_cell,
        lambda p, s: ready_at(p, s["nodes"] * s["pods_per_node"]), lower_is_better=False),
    Row(f"first eviction accepted, s / evictions accepted within {EARLY_SECONDS} s of the first warning",
        _first_evictions, _early_evictions, lower_is_better=False),
    Row("evictions accepted by the deadline", _plain("deadline.evicted_by_deadline"),
        _key("deadline.evicted_by_deadline"), lower_is_better=False),
    Row("API requests per evicted pod (audit log)", _plain("requests_per_evicted_pod"),
        _key("requests_per_evicted_pod")),
    Row("API requests (audit log)", _plain("requests.total"), _key("requests.total")),
    Row("PDB allowance unused while pods waited, mean evictions open (share of the waiting time every PDB with "
        "waiting pods allowed none)", _budget_use),
    Row("PDB violations (lowest currentHealthy - desiredHealthy)",
        lambda p, s: f"{_num(p.get('pdb_violations'))} ({_num(p.get('pdb_lowest_margin'))})"),
    Row("CPU seconds / peak RSS MB of the handler", _cpu_rss),
    Row("machine load average before → after the phase", _load),
)  # fmt: skip


def ratio(spotq: float | None, rival: float | None, lower_is_better: bool) -> str:
    """How many times better spotq's figure is than the rival's (below 1: worse)."""
    if spotq is None or rival is None:
        return "-"
    better, worse = (rival, spotq) if lower_is_better else (spotq, rival)
    if worse == 0:
        return "=" if better == 0 else "∞"
    return f"{better / worse:.1f}x"


def contender_table(scale: dict[str, Any]) -> list[str]:
    present = [(key, title) for key, title in CONTENDERS if isinstance(scale.get(key), dict) and "nodes" in scale[key]]
    rivals = [(key, title) for key, title in RIVALS if key in dict(present)]
    head = [title for _, title in present] + [f"spotq vs {title}" for _, title in rivals]
    lines = ["| figure | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    spotq = scale.get("spotq") or {}
    for row in ROWS:
        cells = [row.cell(scale[key], scale) for key, _ in present]
        for key, _ in rivals:
            mine, theirs = (row.key(spotq, scale), row.key(scale[key], scale)) if row.key else (None, None)
            cells.append(ratio(mine, theirs, row.lower_is_better) if row.key else "")
        lines.append(f"| {row.title} | " + " | ".join(cells) + " |")
    return lines


def grace_bound(scale: dict[str, Any]) -> int | None:
    """Pods the API server's measured eviction ceiling can evict between the event and deadline - grace."""
    rate = dig(scale, "ceiling.client.rate_per_second")
    grace = dig(scale, "cluster.grace_seconds")
    if rate is None or grace is None:
        return None
    pods = int(scale["nodes"]) * int(scale["pods_per_node"])
    return min(pods, int(float(rate) * max(0.0, 120.0 - float(grace))))


def environment_rows(scale: dict[str, Any]) -> list[tuple[str, str]]:
    sqs = {r["endpoint"]: r for r in scale.get("sqs_ceiling") or []}
    bound = grace_bound(scale)
    graceful = dig(scale, "spotq.deadline.evicted_with_grace_before_deadline")
    rows = [
        ("taint+cordon ceiling (minimal client), nodes/s", _num(dig(scale, "ceiling.marks.rate_per_second"))),
        ("spotq taint+cordon rate (first warning sent → last node marked), nodes/s",
         _num(dig(scale, "spotq.mark_rate_per_second"))),
        ("eviction ceiling (minimal client), evictions/s", _num(dig(scale, "ceiling.client.rate_per_second"))),
        ("spotq eviction rate, evictions/s (share of ceiling)",
         f"{_num(dig(scale, 'ceiling.spotq.eviction_rate_per_second'))} "
         f"({_num(dig(scale, 'ceiling.spotq_share'), '{:.0%}')})"),
        ("bound the eviction ceiling sets on pods evicted with their grace before the deadline (spotq's share)",
         f"{_num(bound)} ({_num(graceful / bound if bound and graceful is not None else None, '{:.0%}')})"),
        ("SQS receive+delete ceiling, msg/s (ElasticMQ / moto)",
         " / ".join(str((sqs.get(n) or {}).get("receive_delete_per_second", "-")) for n in ("elasticmq", "moto"))),
    ]  # fmt: skip
    for key, title in RIVALS[:2]:
        phase = scale.get(key)
        if not isinstance(phase, dict):
            continue
        if "error" in phase:
            rows.append((f"{title}", f"did not run: {phase['error']}"))
            continue
        d = phase.get("moto_describe_instances_seconds") or {}
        calls = phase.get("aws_calls") or {}
        refused = sum(n for k, n in (phase.get("aws_errors") or {}).items() if k.startswith("sqs DeleteMessage"))
        rows.append(
            (f"{title}: moto's DescribeInstances p50 / p99 / max, s (calls)",
             f"{_num(d.get('p50'))} / {_num(d.get('p99'))} / {_num(d.get('max'))} ({d.get('n', 0)})")
        )  # fmt: skip
        rows.append(
            (f"{title}: SQS ReceiveMessage / DeleteMessage (refused: stale receipt handle)",
             f"{calls.get('sqs ReceiveMessage', 0)} / {calls.get('sqs DeleteMessage', 0)} ({refused})")
        )  # fmt: skip
        if phase.get("stopped_by_limit"):
            rows.append((f"{title}: phase stopped by --nth-limit", f"after {phase.get('phase_seconds')} s"))
    return rows


def scale_section(scale: dict[str, Any]) -> str:
    c = scale.get("cluster") or {}
    lines = [
        f"## {scale['nodes']} nodes x {scale['pods_per_node']} pods ({scale['scale']})",
        "",
        f"{scale['nodes'] * scale['pods_per_node']} pods in {c.get('deployments', '-')} Deployments, PDB "
        f"maxUnavailable {c.get('pdb_max_unavailable', '-')}, grace {c.get('grace_seconds', '-')} s; all warnings "
        f"sent at once; deadline = the warnings' event time + 120 s. Finished {scale.get('finished_at', '-')}.",
    ]
    if scale.get("note"):
        lines += ["", f"**Note: {scale['note']}**"]
    lines += ["", *contender_table(scale), "", "| the API server, the queue, NTH's AWS calls | |", "|---|---|"]
    lines += [f"| {title} | {value} |" for title, value in environment_rows(scale)]
    return "\n".join(lines)


def table(results: list[dict[str, Any]], index: dict[str, Any] | None, host: dict[str, Any]) -> str:
    """summary.md's text: one section per scale."""
    parts = [
        "# Mass interruption: spotq, kubectl drain x10 and aws-node-termination-handler (NTH)",
        "",
        "`spotq vs X` columns: how many times better spotq's figure is (shorter time, fewer requests, more pods or "
        "nodes in the window); below 1.0x spotq did worse. NTH tuned: WORKERS=50, KUBE_API_QPS=100, "
        "KUBE_API_BURST=200; both NTH runs with TAINT_NODE=true. A pod counts as evicted early enough when its "
        "eviction was accepted at least its grace before the deadline.",
    ]
    parts += ["", *(scale_section(r) + "\n" for r in results)]
    if index:
        mb = index.get("after_list", {})
        parts.append(
            f"spotq RSS with {index.get('indexed')} nodes indexed: {mb.get('VmRSS', 0):.0f} MB "
            f"(peak {mb.get('VmHWM', 0):.0f} MB; {index['empty_cluster'].get('VmRSS', 0):.0f} MB on an empty cluster)"
            "\n"
        )
    parts.append(
        f"Machine: {host['nproc']} cores ({host['cpu_model']}), {host['memory_gib']} GiB, Python {host['python']}."
    )
    return "\n".join(parts)


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
