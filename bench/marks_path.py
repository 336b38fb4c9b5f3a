"""Where a wave's marks spend their time, from a work directory kept by `bench.run --keep`: for each node, spotq's
`notice received` (its log) → its PATCH received by the API server → answered (the audit log) → `node marked`.

    python -m bench.marks_path WORKDIR/<scale> [--phase spotq]

Prints quantiles of each step, when the first PATCH reached the API server, and the most PATCHes the API server
held at once. spotq's side (received → at the server) is its own work and its wait for a connection; the server's
side is the PATCH's cost under the wave.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple


class Mark(NamedTuple):
    received: float  # spotq logged the notice received
    at_server: float  # the API server received the PATCH
    answered: float  # and answered it
    logged: float  # spotq logged the node marked


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def marks(workdir: Path, phase: str) -> list[Mark]:
    received: dict[str, float] = {}
    logged: dict[str, float] = {}
    notice_of: dict[str, str] = {}
    for line in (workdir / f"spotq-{phase}.log").read_text().splitlines():
        try:
            event: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue
        notice = event.get("notice_id")
        if not notice:
            continue
        if event.get("event") == "notice received":
            received.setdefault(notice, _stamp(event["time"]))
        elif event.get("event") == "node marked":
            logged[notice] = _stamp(event["time"])
            notice_of[event["node"]] = notice
    server: dict[str, tuple[float, float]] = {}
    for line in (workdir / "audit.log").read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if (
            event.get("stage") != "ResponseComplete"
            or "spotq" not in event["user"]["username"]
            or event["verb"] != "patch"
            or ref.get("resource") != "nodes"
            or ref.get("subresource")
        ):
            continue
        server.setdefault(ref["name"], (_stamp(event["requestReceivedTimestamp"]), _stamp(event["stageTimestamp"])))
    return [
        Mark(received[notice], *server[node], logged[notice])
        for node, notice in notice_of.items()
        if notice in received and node in server
    ]


def _quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    return " / ".join(f"{ordered[int(q * (len(ordered) - 1))]:.3f}" for q in (0.0, 0.5, 0.9, 1.0))


def report(found: list[Mark]) -> list[str]:
    if not found:
        return ["no marks found"]
    start = min(m.received for m in found)
    edges = sorted([(m.at_server, 1) for m in found] + [(m.answered, -1) for m in found])
    held = most = 0
    for _, step in edges:
        held += step
        most = max(most, held)
    return [
        f"{len(found)} marks; quantiles min / p50 / p90 / max, s",
        f"received, from the first: {_quantiles([m.received - start for m in found])}",
        f"received → at the API server: {_quantiles([m.at_server - m.received for m in found])}",
        f"at the API server → answered: {_quantiles([m.answered - m.at_server for m in found])}",
        f"answered → logged: {_quantiles([m.logged - m.answered for m in found])}",
        f"first PATCH at the API server {min(m.at_server for m in found) - start:.3f} s after the first notice "
        f"received, last answered {max(m.answered for m in found) - start:.3f} s; at most {most} at the server at once",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path, help="a kept scale directory: <work directory>/<scale>")
    parser.add_argument("--phase", default="spotq", help="the spotq-<phase>.log to read")
    args = parser.parse_args()
    print("\n".join(report(marks(args.workdir, args.phase))))


if __name__ == "__main__":
    main()
