"""Faults of the control plane's API server: SIGSTOP/SIGCONT, and kill -9 followed by a restart with the same
command line (same port, certificates, etcd and audit log), which LocalCluster has no method for, or with a few
request seats only (a throttling API server).

The restart replaces the kube-apiserver entry of the cluster's process table (`LocalCluster._procs`, a private
attribute read here on purpose, so testenv stays as it is for the other helpers): `stop()` then stops the new
process as it would have stopped the old one.
"""

from __future__ import annotations

import os
import signal
import time
import weakref

from testenv import LocalCluster
from testenv.procs import ManagedProcess, wait_until

# Each cluster's API server command line as LocalCluster started it (a throttled restart must not become the norm).
_first_argv: weakref.WeakKeyDictionary[LocalCluster, list[str]] = weakref.WeakKeyDictionary()


def pause(cluster: LocalCluster) -> None:
    os.kill(cluster.apiserver_pid, signal.SIGSTOP)


def resume(cluster: LocalCluster) -> None:
    os.kill(cluster.apiserver_pid, signal.SIGCONT)


def kill(cluster: LocalCluster) -> float:
    """kill -9 the API server; returns when it is gone."""
    old: ManagedProcess = cluster._procs["kube-apiserver"]
    old.popen.kill()
    old.popen.wait(10)
    old.stop(0)  # closes its log handle
    return time.time()


def restart(cluster: LocalCluster, *, timeout: float = 120.0, seats: tuple[int, int] | None = None) -> float:
    """Start the API server again with its first command line; returns when /readyz says ok. `seats`: with these
    (--max-requests-inflight, --max-mutating-requests-inflight) instead: API Priority and Fairness shares them out,
    and what does not fit its queues is turned away with 429."""
    old: ManagedProcess = cluster._procs["kube-apiserver"]
    argv = _first_argv.setdefault(cluster, list(old.argv))
    if seats is not None:
        limits = {"--max-requests-inflight": seats[0], "--max-mutating-requests-inflight": seats[1]}
        argv = [a for a in argv if a.partition("=")[0] not in limits] + [f"{k}={v}" for k, v in limits.items()]
    new = ManagedProcess(old.name, argv, old.log_path, cwd=cluster.workdir)
    cluster._procs["kube-apiserver"] = new

    def ready() -> bool:
        status, text = cluster.client.raw("GET", "/readyz", accept="text/plain")
        return status == 200 and text.strip() == "ok"

    wait_until("kube-apiserver /readyz after its restart", ready, timeout=timeout, interval=0.2, processes=[new])
    return time.time()
