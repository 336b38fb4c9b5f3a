"""spotq's local test environment: a real Kubernetes control plane with kwok nodes, a moto AWS server and an
IMDS mock, all on 127.0.0.1. Build the binaries once with ``make testenv``; see testenv/README.md.
"""

from .aws import LIFECYCLE_ACTIONS, LifecycleActionCall, LifecycleActionLog, MotoServer, install_lifecycle_actions
from .cluster import LocalCluster, audit_flags, write_kubeconfig
from .imds import ImdsMock
from .kube import KubeApiError, KubeClient
from .procs import StartupError
from .tools import MissingBinaryError, bin_dir, missing_tools, tool, versions
from .workloads import NodeInfo, new_instance_id

__all__ = [
    "LIFECYCLE_ACTIONS",
    "ImdsMock",
    "KubeApiError",
    "KubeClient",
    "LifecycleActionCall",
    "LifecycleActionLog",
    "LocalCluster",
    "MissingBinaryError",
    "MotoServer",
    "NodeInfo",
    "StartupError",
    "audit_flags",
    "bin_dir",
    "install_lifecycle_actions",
    "missing_tools",
    "new_instance_id",
    "tool",
    "versions",
    "write_kubeconfig",
]
