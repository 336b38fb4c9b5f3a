"""Faults of the control plane's API server: SIGSTOP/SIGCONT, and kill -9 followed by a restart with the same
command line (same port, certificates, etcd and audit log), which LocalCluster has no method for.

The restart replaces the kube-apiserver entry of the cluster's process table (`LocalCluster._procs`, a private
attribute read here on purpose, so testenv stays as it is for the other helpers): `stop()` then stops the new
process as it would have stopped the old one.
"""

from __future__ import annotations

import os
import signal
import time

from testenv import LocalCluster
from testenv.procs import ManagedProcess, wait_until


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


def restart(cluster: LocalCluster, *, timeout: float = 120.0) -> float:
    """Start the API server again with its old command line; returns when /readyz says ok."""
    old: ManagedProcess = cluster._procs["kube-apiserver"]
    new = ManagedProcess(old.name, old.argv, old.log_path, cwd=cluster.workdir)
    cluster._procs["kube-apiserver"] = new

    def ready() -> bool:
        status, text = cluster.client.raw("GET", "/readyz", accept="text/plain")
        return status == 200 and text.strip() == "ok"

    wait_until("kube-apiserver /readyz after its restart", ready, timeout=timeout, interval=0.2, processes=[new])
    return time.time()
