"""``python -m testenv up [--spot-nodes N] [--on-demand-nodes N] [--no-moto]``: start the environment by hand.

Prints KUBECONFIG, the API server and the moto endpoint, then waits until Ctrl-C and tears everything down.
``python -m testenv check`` reports which binaries are built.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from . import tools
from .aws import MotoServer
from .cluster import LocalCluster


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(LocalCluster(keep_workdir=args.keep))
        if args.spot_nodes:
            cluster.create_spot_nodes(args.spot_nodes)
        if args.on_demand_nodes:
            cluster.create_on_demand_nodes(args.on_demand_nodes)
        lines = [
            f"export KUBECONFIG={cluster.kubeconfig_path}",
            f"# API server:  {cluster.server_url}  (CA {cluster.ca_path})",
            f"# logs:        {cluster.logs_dir}",
            f"# pids:        {cluster.pids}",
            f"# kubectl:     {tools.tool('kubectl')}",
        ]
        if not args.no_moto:
            moto = stack.enter_context(MotoServer())
            lines += [f"export {k}={v}" for k, v in moto.env().items()]
        print("\n".join(lines), flush=True)
        print("# Ctrl-C to stop", file=sys.stderr, flush=True)
        try:
            while not stop.wait(1):
                cluster.check_alive()
        except KeyboardInterrupt:
            pass
    return 0


def _check(_: argparse.Namespace) -> int:
    missing = tools.missing_tools()
    print(f"binaries: {tools.bin_dir()}")
    for key, value in tools.versions().items():
        print(f"  {key}={value}")
    if missing:
        print(f"missing: {', '.join(missing)} -> run `make testenv`")
        return 1
    print("all built")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testenv")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (and moto) and wait for Ctrl-C")
    up.add_argument("--spot-nodes", type=int, default=3)
    up.add_argument("--on-demand-nodes", type=int, default=1)
    up.add_argument("--no-moto", action="store_true")
    up.add_argument("--keep", action="store_true", help="keep the work directory (logs) after stopping")
    up.set_defaults(func=_up)
    check = sub.add_parser("check", help="report whether the binaries are built")
    check.set_defaults(func=_check)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
