"""Fixtures for the deployable artifacts: helm (built by `make testenv`) pointed at the shared local cluster.

The cluster, moto and namespace fixtures live in tests/conftest.py (one of each per test session).
"""

from __future__ import annotations

import pytest

from testenv import LocalCluster, MissingBinaryError, tools

from .support import Helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = tools.tool("helm")
    except MissingBinaryError as exc:
        pytest.fail(f"helm is not built: {exc}", pytrace=False)
    return Helm(binary=binary, home=tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def cluster_helm(helm: Helm, local_cluster: LocalCluster) -> Helm:
    """helm pointed at the local cluster with the admin kubeconfig."""
    return helm.with_kubeconfig(local_cluster.kubeconfig_path)
