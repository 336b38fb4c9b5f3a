"""Fixtures every test directory shares: one real local cluster and one moto server per test session.

* ``local_cluster`` (session): a real control plane with kwok nodes (see testenv/README.md). If the binaries are
  missing (run ``make testenv``) or the cluster fails to start, every test that needs it fails with the reason;
  nothing is skipped and nothing is faked.
* ``namespace`` (function): a fresh namespace for the test, deleted afterwards.
* Nodes a test creates are deleted after that test (nodes made by broader-scoped fixtures are left alone).
* ``moto_server`` (session) and ``moto`` (function: the same server, reset before the test).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from testenv import LocalCluster, MissingBinaryError, MotoServer, StartupError


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        cluster.start()
    except MissingBinaryError as exc:
        pytest.fail(f"the local test environment is not built: {exc}", pytrace=False)
    except StartupError as exc:
        pytest.fail(f"the local Kubernetes cluster failed to start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def _namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-") or "test"
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(local_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = local_cluster.create_namespace(_namespace_name(request.node.name))
    try:
        yield name
    finally:
        local_cluster.delete_namespace(name)


@pytest.fixture(autouse=True)
def _delete_nodes_created_by_test(request: pytest.FixtureRequest) -> Iterator[None]:
    if "local_cluster" not in request.fixturenames:
        yield
        return
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    before = {n["metadata"]["name"] for n in cluster.client.list_items("/api/v1/nodes")}
    yield
    after = {n["metadata"]["name"] for n in cluster.client.list_items("/api/v1/nodes")}
    cluster.delete_nodes(after - before)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        server.start()
    except Exception as exc:
        pytest.fail(f"the moto server failed to start: {exc!r}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The session's moto server with every resource and recorded lifecycle action forgotten."""
    moto_server.reset()
    return moto_server
