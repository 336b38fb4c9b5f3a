"""The fault report: each scenario on a fresh local environment, a table printed, JSON written.

    python -m faults.run                                  # every scenario, 10-node waves, a 3-minute soak
    python -m faults.run --scenario kill-restart --nodes 4
    python -m faults.run --scenario soak --soak-minutes 30

Writes `<out>/<scenario>.json` (every figure and detail), `<out>/report.json` (all of them, the machine and its
load) and `<out>/table.md`. Not a test: it prints what it measured, met or missed; its exit status says only
whether every scenario ran (0) or one failed to (1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import procstat
from faults import report
from faults.env import Environment
from faults.measure import write_json
from faults.scenarios import SCENARIOS
from faults.trial import Options, say


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m faults.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="repeatable; default: all")
    parser.add_argument("--nodes", type=int, default=10, help="Spot nodes in a wave (default 10)")
    parser.add_argument("--pods-per-node", type=int, default=4)
    parser.add_argument("--grace", type=int, default=5, help="the pods' termination grace, s")
    parser.add_argument("--max-unavailable", default="10%", help="the PDB's maxUnavailable (default 10%%)")
    parser.add_argument("--ready-delay", type=float, default=3.0, help="s from a pod's binding to Ready")
    parser.add_argument("--restart-delay", type=float, default=5.0, help="kill -9 → restart, s (spotq, API server)")
    parser.add_argument("--apiserver-pause", type=float, default=20.0, help="SIGSTOP → SIGCONT, s")
    parser.add_argument("--throttle", type=float, default=30.0, help="the API server with a few seats, s")
    parser.add_argument("--sqs-outage", type=float, default=45.0, help="SQS hung / refusing, s")
    parser.add_argument("--flood-clients", type=int, default=30, help="noisy neighbours' ServiceAccounts")
    parser.add_argument("--token-outage", type=float, default=10.0, help="spotq's token revoked → a new one, s")
    parser.add_argument("--flood", type=int, default=2000, help="bad bodies in the poison flood")
    parser.add_argument("--flood-real", type=int, default=10, help="real warnings among them")
    parser.add_argument("--soak-minutes", type=float, default=3.0)
    parser.add_argument("--sqs", choices=["elasticmq", "moto"], default="elasticmq",
                        help="the queue endpoint (the poison flood always runs on ElasticMQ)")  # fmt: skip
    parser.add_argument("--spotq-setting", action="append", default=[], metavar="SPOTQ_X__Y=V")
    parser.add_argument("--out", type=Path, default=Path("faults/results"))
    parser.add_argument("--keep", action="store_true", help="keep each environment's work directory")
    parser.add_argument("--note", default="", help="a line recorded with the results (e.g. 'machine busy')")
    return parser.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    return Options(
        nodes=args.nodes,
        pods_per_node=args.pods_per_node,
        grace_seconds=args.grace,
        max_unavailable=args.max_unavailable,
        ready_delay=args.ready_delay,
        restart_delay=args.restart_delay,
        apiserver_pause=args.apiserver_pause,
        throttle=args.throttle,
        sqs_outage=args.sqs_outage,
        token_outage=args.token_outage,
        flood_clients=args.flood_clients,
        flood=args.flood,
        flood_real=args.flood_real,
        soak_minutes=args.soak_minutes,
        settings=dict(item.split("=", 1) for item in args.spotq_setting),
    )


def run_one(name: str, opts: Options, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    scenario = SCENARIOS[name]
    load_before = round(procstat.load_average(), 2)
    say(f"scenario {name}: {scenario.title} (load {load_before:.2f})")
    started = time.time()
    env: Environment | None = None
    try:
        env = Environment.create(workdir / name, sqs=scenario.sqs or args.sqs, settings=opts.settings, keep=args.keep)
        doc = scenario.run(env, opts).as_dict()
    except Exception as exc:
        traceback.print_exc()
        doc = {"scenario": name, "title": scenario.title, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if env is not None:
            env.close()
        if not args.keep:
            shutil.rmtree(workdir / name, ignore_errors=True)
    doc["spotq"] = spotq_version()  # at the scenario's end: other work may land while a report runs
    doc["load_average_before"] = load_before
    doc["load_average_after"] = round(procstat.load_average(), 2)
    doc["wall_seconds"] = round(time.time() - started, 1)
    doc["sqs_endpoint"] = scenario.sqs or args.sqs
    return doc


def spotq_version() -> dict[str, object]:
    """The commit checked out, the last one that changed spotq/ (what the processes ran), and the spotq/ files that
    differed from it (other work in progress)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent, check=False)
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain", "--", "../spotq").splitlines()]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "spotq_commit": git("log", "-1", "--format=%h", "--", "../spotq"),  # the last commit that changed spotq/
        "uncommitted_spotq_files": changed,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = options(args)
    names = args.scenario or list(SCENARIOS)
    workdir = Path(tempfile.mkdtemp(prefix="spotq-faults-"))
    version = spotq_version()
    docs = []
    started = time.time()
    for name in names:
        doc = run_one(name, opts, args, workdir)
        docs.append(doc)
        write_json(args.out / f"{name}.json", doc)
        print(report.table([doc]).splitlines()[-1], flush=True)
    table = report.table(docs)
    result = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "machine": procstat.machine(),
        "spotq": version,
        "load_averages": [(d["scenario"], d["load_average_before"], d["load_average_after"]) for d in docs],
        "note": args.note,
        "options": {k: v for k, v in vars(opts).items() if k != "settings"} | {"settings": opts.settings},
        "scenarios": docs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "table.md").write_text(report.header(result) + "\n\n" + table + "\n\n" + report.notes(docs) + "\n")
    print()
    print(table)
    print()
    print(report.notes(docs))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(d.get("error") for d in docs) else 0


if __name__ == "__main__":
    sys.exit(main())
