"""What one drain's pod watch costs in resident memory: a fresh process opens N pod watches (one per node, as N
drains do) on the local API server through spotq's own client and reports VmRSS before and after.

    python -m bench.watch_rss [--watches 500] [--tls-read-kib 64 --tls-read-kib 16]

A wave of hundreds of nodes holds up to drain.max_concurrent_nodes such watches at once, so their per-connection
cost decides the wave's peak RSS. Each --tls-read-kib runs a process of its own with asyncio's per-connection TLS
read buffer at that size (spotq's is transport._TLS_READ_BUFFER).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from spotq.ports import Pod
from testenv import LocalCluster


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _measure(kubeconfig: str, watches: int, tls_read_kib: int) -> dict[str, float]:
    from spotq.kube import transport
    from spotq.kube.client import KubeClient
    from spotq.kube.pods import PodClient
    from spotq.settings import KubeSettings

    transport._TLS_READ_BUFFER = tls_read_kib * 1024
    kube = await KubeClient.connect(KubeSettings(kubeconfig=kubeconfig), max_connections=watches + 16)
    pods = PodClient(kube)
    listed: set[str] = set()
    all_listed = asyncio.Event()

    def lister(name: str) -> Callable[[list[Pod]], None]:
        def on_list(_pods: list[Pod]) -> None:
            listed.add(name)
            if len(listed) >= watches:
                all_listed.set()

        return on_list

    def ignore(_kind: str, _pod: Pod) -> None:
        return None

    await kube.request("GET", "/api/v1/namespaces/default", operation="warm_up")  # imports, TLS, auth done
    before = _rss_mb()
    tasks = [asyncio.create_task(pods.follow_node(f"node-{i}", lister(f"node-{i}"), ignore)) for i in range(watches)]
    async with asyncio.timeout(120):
        await all_listed.wait()
    await asyncio.sleep(2)
    after = _rss_mb()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await kube.close()
    per_watch = (after - before) * 1024 / max(1, watches)
    return {"before_mb": round(before, 1), "after_mb": round(after, 1), "kib_per_watch": round(per_watch, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=500)
    parser.add_argument("--tls-read-kib", type=int, action="append", help="repeatable (default: 64 and 16)")
    parser.add_argument("--child", nargs=3, metavar=("KUBECONFIG", "WATCHES", "KIB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kubeconfig, watches, kib = args.child
        print(json.dumps(asyncio.run(_measure(kubeconfig, int(watches), int(kib)))))
        return
    sizes = args.tls_read_kib or [64, 16]
    with LocalCluster(verbose=False) as cluster:
        for kib in sizes:
            out = subprocess.run(
                [sys.executable, "-m", "bench.watch_rss", "--child", str(cluster.kubeconfig_path), str(args.watches),
                 str(kib)],
                check=False, capture_output=True, text=True,
            )  # fmt: skip
            if out.returncode != 0:
                raise SystemExit(f"the measuring process failed:\n{out.stderr[-3000:]}")
            found = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{args.watches} pod watches, TLS read buffer {kib} KiB: VmRSS {found['before_mb']} → "
                f"{found['after_mb']} MB ({found['kib_per_watch']} KiB a watch)"
            )


if __name__ == "__main__":
    main()
