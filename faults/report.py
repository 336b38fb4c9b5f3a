"""The fault report's table (Markdown, printed and written to table.md) and its JSON."""

from __future__ import annotations

from typing import Any

COLUMNS = [
    ("scenario", "scenario"),
    ("marked", "marked"),
    ("evicted", "pods evicted ≤ deadline"),
    ("drained", "nodes drained ≤ deadline"),
    ("pdb", "PDB violations"),
    ("lost", "LOST"),
    ("dup_evictions", "dup. evictions"),
    ("dup_drains", "dup. drains"),
    ("resume", "resume s"),
    ("tracebacks", "tracebacks"),
    ("rss", "RSS MB"),
    ("stuck", "stuck"),
    ("verdict", "targets"),
]


# The details printed under the table, when a scenario has them.
NOTE_KEYS = (
    "slowest_drain_seconds",
    "fault_at_seconds",
    "unfinished_at_kill",
    "old_exit_seconds_after_sigterm",
    "unfinished_when_old_exited",
    "ready_again_after_seconds",
    "not_ready_samples_while_paused",
    "not_ready_samples_during_outage",
    "evictions_during_outage",
    "all_real_marked_seconds",
    "all_deleted_seconds",
    "bad_deleted",
    "own_pod_evicted_seconds",
    "replacement_ready_seconds",
    "died_with_its_node_seconds",
    "claims_at_kill",
    "nodes_replaced",
    "rss",
    "spotq_requests_while_throttled",
    "spotq_429s_while_throttled",
    "evictions_while_throttled",
    "outage_seconds",
    "budget_room_after_seconds",
    "not_ready_samples_while_revoked",
    "last_request_before_renewal_seconds",
    "flood_answers",
    "spotq_requests_during_flood",
    "spotq_429s_during_flood",
    "spotq_request_seconds",
)


def row(doc: dict[str, Any]) -> dict[str, str]:
    """One scenario's cells from its figures (measure.Figures.as_dict), or from {'scenario', 'error'}."""
    name = str(doc.get("scenario"))
    if doc.get("error"):
        return {"scenario": name, "verdict": f"ERROR: {str(doc['error'])[:80]}"}
    if doc.get("skipped"):
        return {"scenario": name, "verdict": f"not run: {doc['skipped']}"}
    n, pods = doc["interruptions"], doc["pods"]
    resume = doc.get("resume_seconds")
    resume_text = "-" if resume is None and not doc.get("resume_never") else f"{resume}"
    if doc.get("resume_never"):
        resume_text = f"{resume if resume is not None else '-'} ({doc['resume_never']} never)"
    rss = doc.get("rss_peak_mb")
    rss_text = "-" if rss is None else f"{rss:.0f}"
    if doc.get("rss_growth_pct") is not None:
        rss_text += f" ({doc['rss_growth_pct']:+.1f} %)"
    missed = [k for k, v in doc.get("targets", {}).items() if v == "missed"]
    return {
        "scenario": name,
        "marked": f"{doc['marked']}/{n}",
        "evicted": f"{doc['evicted_before_deadline']}/{pods}",
        "drained": f"{doc['drained_before_deadline']}/{n}",
        "pdb": str(doc["pdb_violations"]),
        "lost": str(doc["lost"]),
        "dup_evictions": str(doc["duplicate_evictions"]),
        "dup_drains": str(doc["duplicate_drains"]),
        "resume": resume_text,
        "tracebacks": str(doc["tracebacks"]),
        "rss": rss_text,
        "stuck": "yes" if doc.get("stuck") else "no",
        "verdict": "all met" if not missed else "missed: " + ", ".join(missed),
    }


def table(docs: list[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for doc in docs:
        cells = row(doc)
        lines.append("| " + " | ".join(cells.get(key, "") for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def notes(docs: list[dict[str, Any]]) -> str:
    """One line per scenario with what the table has no column for: resume's definition, the scenario's own
    figures, why it is stuck."""
    out = []
    for doc in docs:
        if doc.get("error") or doc.get("skipped"):
            continue
        parts = []
        if doc.get("resume_what"):
            parts.append(f"resume = {doc['resume_what']} (target ≤ {doc['resume_target']:g} s)")
        details = doc.get("details") or {}
        for key in NOTE_KEYS:
            if key in details and details[key] is not None:
                parts.append(f"{key} {details[key]}")
        if doc.get("stuck_why"):
            parts.append("stuck: " + "; ".join(doc["stuck_why"]))
        if details.get("lost"):
            parts.append(f"lost: {details['lost'][:3]}")
        if details.get("duplicate_drains"):
            parts.append(f"duplicate drains: {dict(list(details['duplicate_drains'].items())[:3])}")
        out.append(f"- **{doc['scenario']}**: " + "; ".join(parts))
    return "\n".join(out)


def header(result: dict[str, Any]) -> str:
    """Where and when: the machine, the run's options, the load average before and after each scenario."""
    machine = result["machine"]
    loads = [value for _, before, after in result["load_averages"] for value in (before, after)]
    opts = result["options"]
    text = (
        f"{result['started']}, {machine['nproc']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}; waves of {opts['nodes']} nodes x {opts['pods_per_node']} pods, PDB "
        f"maxUnavailable {opts['max_unavailable']}, grace {opts['grace_seconds']} s, replacements Ready "
        f"{opts['ready_delay']:g} s after binding; load average {min(loads, default=0):.1f}-"
        f"{max(loads, default=0):.1f} (1 min, before/after each scenario); "
        f"{result['wall_seconds'] / 60:.0f} min in all."
    )
    versions = [d.get("spotq") or result.get("spotq") or {} for d in result.get("scenarios", [])]
    commits = list(dict.fromkeys(str(v.get("spotq_commit") or v.get("commit")) for v in versions if v.get("commit")))
    if commits:
        dirty = any(v.get("uncommitted_spotq_files") for v in versions)
        text += f" spotq at {' then '.join(commits)}" + (" (with uncommitted changes in spotq/)" if dirty else "") + "."
    if result.get("note"):
        text += f" {result['note']}"
    return text
