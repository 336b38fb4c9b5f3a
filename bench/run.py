"""`python -m bench.run --scale 200x20`: the mass-interruption benchmark, one command, figures as JSON + PNG.

For each scale (K nodes x P pods) on a fresh local control plane with kwok nodes:

  sqs       the SQS endpoint's own ceiling (ElasticMQ, and moto for comparison)
  spotq     K Spot warnings sent at once; per node enqueued → received → tainted+cordoned → drained,
            PDB lows, replacements Running, API requests (audit log), CPU, RSS, a py-spy profile
  kubectl   the same layout drained by `kubectl drain` ten at a time with NTH's flags
  nth-*     aws-node-termination-handler itself (built from ../shared/peers into the tools cache), queue mode,
            its defaults (+ TAINT_NODE) and tuned (50 workers, QPS 100 / burst 200), on the same layout and queue
  ceiling   PDBs relaxed; a minimal eviction client evicts half the nodes' pods as fast as the API server
            takes them, then spotq drains the other half: spotq's share of the ceiling
and once per run: spotq's RSS with 5000 nodes in its index.

Every wait is bounded; see --help for the limits. The CLI only: the phases are in phases.py, their figures in
figures.py, the JSON, PNG and summary.md in report.py.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import figures, nth, nth_build, phases, procstat, report
from bench.console import say
from bench.world import Scale

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ["50x10", "200x20", "1000x5"]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--scale", action="append", help="K or KxP (nodes x pods per node; P defaults to 10)")
    parser.add_argument("--all", action="store_true", help=f"run {', '.join(PRESETS)}")
    parser.add_argument("--sqs", default="elasticmq", choices=["elasticmq", "moto"])
    parser.add_argument("--no-moto", dest="compare_moto", action="store_false", help="skip moto's SQS ceiling")
    parser.add_argument("--grace", type=int, default=30, help="pods' terminationGracePeriodSeconds")
    parser.add_argument("--max-unavailable", default="20%", help="each PDB's maxUnavailable")
    parser.add_argument("--no-kubectl", dest="kubectl", action="store_false")
    parser.add_argument("--kubectl-limit", type=float, default=900.0, help="start no kubectl drain after this, s")
    parser.add_argument(
        "--nth", action="append", choices=sorted(nth.CONFIGS),
        help="aws-node-termination-handler configurations to run (repeatable; default: tuned and defaults)",
    )  # fmt: skip
    parser.add_argument("--no-nth", dest="no_nth", action="store_true", help="run no aws-node-termination-handler")
    parser.add_argument("--nth-limit", type=float, default=600.0, help="longest wait for one NTH phase, s")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false")
    parser.add_argument("--ceiling-lanes", type=int, default=4, help="ceiling client: evictions in flight per PDB")
    parser.add_argument(
        "--mark-ceiling-in-flight", type=int, default=64, help="taint+cordon ceiling client: PATCHes in flight"
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument(
        "--spotq-setting", action="append", default=[], metavar="SPOTQ_GROUP__NAME=VALUE",
        help="a spotq setting for the runs (repeatable), e.g. SPOTQ_QUEUE__RECEIVERS=8",
    )  # fmt: skip
    parser.add_argument("--index-nodes", type=int, default=5000, help="nodes for the RSS measurement (0: skip)")
    parser.add_argument("--phase-timeout", type=float, default=300.0, help="longest wait for one spotq phase, s")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit log)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="a line printed with each scale's figures (e.g. a noisy machine)")
    args = parser.parse_args(argv)
    args.nth = [] if args.no_nth else (args.nth or ["tuned", "defaults"])
    # A SIGTERM (timeout, CI) must still stop the cluster and ElasticMQ: let it unwind like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    scales = [Scale.parse(s) for s in (PRESETS if args.all else (args.scale or ["50x10"]))]
    host = procstat.machine()
    say(f"machine: {host['nproc']} cores, {host['cpu_model']}, load {procstat.load_average():.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    # Built once into the tools cache (5-7 min cold), in the background while the first cluster comes up.
    build = nth_build.Build(say).start() if args.nth else None
    workroot = Path(tempfile.mkdtemp(prefix="spotq-bench-"))
    try:
        for scale in scales:
            say(f"=== scale {scale.label} ===")
            run = phases.ScaleRun(args, scale, workroot / scale.label, build)
            try:
                result = run.run()
            finally:
                run.close()
            figures.ratio_vs_kubectl(result)
            result["machine"] = host
            if args.note:
                result["note"] = args.note
            result["finished_at"] = datetime.now(UTC).isoformat()
            report.write_scale(result, args.out)
        index = phases.index_rss(args, workroot) if args.index_nodes else None
        print("\n" + report.write_summary(args.out, index, host))
    finally:
        if build is not None:
            build.stop()
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            say(f"work directory kept: {workroot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
