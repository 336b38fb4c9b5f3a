"""What a wave's first taints gain from connections kept open (spotq/kube/warming.py): node PATCHes through spotq's
own client (kube.max_in_flight at a time) on a fresh client, cold (each connection opened by its first PATCH: TCP
and TLS handshakes) or warm (warming.warm opened them beforehand), and the RSS the open connections cost.

    python -m bench.warm_connections [--nodes 100] [--rounds 2] [--in-flight 128 --in-flight 64]

Rounds alternate cold and warm (cold first, then warm first) on a fresh set of nodes each; figures per round and
the median per setting. The nodes are index-only (no kwok): a PATCH's cost is the API server's and the client's.
The RSS is measured first, in a fresh process of its own for each setting (freed memory would hide it later).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import world
from spotq.kube import warming
from spotq.kube.client import KubeClient
from spotq.ratelimit import Priority
from spotq.settings import KubeSettings

_BODY = {"spec": {"unschedulable": True, "taints": [{"key": "bench.spotq.io/warm", "effect": "NoSchedule"}]}}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _rss(kubeconfig: str, connections: int) -> float:
    """MB of RSS that `connections` warm connections add to a fresh client (one connection open already)."""
    kube = await KubeClient.connect(KubeSettings(kubeconfig=kubeconfig), max_connections=connections + 8)
    try:
        await kube.request("GET", "/version", operation="bench")  # imports, credentials, one connection
        before = _rss_mb()
        await warming.warm(kube, connections)
        return _rss_mb() - before
    finally:
        await kube.close()


async def _round(kubeconfig: str, nodes: list[str], in_flight: int, warm: bool) -> float:
    """Seconds for the PATCHes."""
    settings = KubeSettings(kubeconfig=kubeconfig, max_in_flight=in_flight)
    kube = await KubeClient.connect(settings, max_connections=in_flight + 8)
    try:
        await kube.request("GET", "/version", operation="bench")  # imports, credentials, one connection
        if warm:
            await warming.warm(kube, in_flight)
            await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.gather(
            *(
                kube.request(
                    "PATCH",
                    f"/api/v1/nodes/{name}",
                    body=_BODY,
                    content_type="application/merge-patch+json",
                    operation="bench",
                    priority=Priority.MARK,
                )
                for name in nodes
            )
        )
        return time.monotonic() - started
    finally:
        await kube.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="cold+warm pairs per in-flight setting")
    parser.add_argument("--in-flight", type=int, action="append", help="kube.max_in_flight (repeatable)")
    parser.add_argument("--rss-of", nargs=2, metavar=("KUBECONFIG", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        print(f"{asyncio.run(_rss(args.rss_of[0], int(args.rss_of[1]))):.1f}")
        return
    settings = args.in_flight or [128, 64]
    with tempfile.TemporaryDirectory(prefix="spotq-warm-") as work:
        cluster = world.start_cluster(Path(work))
        try:
            kubeconfigs = world.create_identities(cluster)
            names = world.create_index_nodes(cluster, args.nodes * args.rounds * 2 * len(settings))
            time.sleep(3)
            for in_flight in settings:
                kubeconfig = str(kubeconfigs["spotq"])
                mb = subprocess.run(
                    [sys.executable, "-m", "bench.warm_connections", "--rss-of", kubeconfig, str(in_flight)],
                    check=True, capture_output=True, text=True,
                ).stdout.strip()  # fmt: skip
                print(f"{in_flight} warm connections: +{mb} MB RSS (a fresh process)", flush=True)
            offset = 0
            for in_flight in settings:
                found: dict[bool, list[float]] = {False: [], True: []}
                for number in range(args.rounds):
                    for warm in (False, True) if number % 2 == 0 else (True, False):
                        part = names[offset : offset + args.nodes]
                        offset += args.nodes
                        seconds = asyncio.run(_round(str(kubeconfigs["spotq"]), part, in_flight, warm))
                        found[warm].append(seconds)
                        print(f"in flight {in_flight}, {'warm' if warm else 'cold'}: {args.nodes} PATCHes in "
                              f"{seconds:.3f} s ({args.nodes / seconds:.0f}/s)", flush=True)  # fmt: skip
                cold, warm_ = statistics.median(found[False]), statistics.median(found[True])
                print(f"in flight {in_flight}: median cold {cold:.3f} s, warm {warm_:.3f} s ({cold / warm_:.2f}x)")
                time.sleep(1)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
