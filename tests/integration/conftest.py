"""Fixtures for spotq's integration tests: a queue in moto and the settings to run spotq against the local
environment. The cluster, moto and namespace fixtures live in tests/conftest.py.
"""

from __future__ import annotations

import pytest

from testenv import LocalCluster, MotoServer


@pytest.fixture
def queue(moto: MotoServer) -> str:
    """An SQS queue in moto for spotq to consume (retention 300 s, as the CloudFormation stack sets)."""
    url: str = moto.client("sqs").create_queue(QueueName="spotq-events", Attributes={"MessageRetentionPeriod": "300"})[
        "QueueUrl"
    ]
    return url


@pytest.fixture
def spotq_env(local_cluster: LocalCluster, moto: MotoServer, queue: str) -> dict[str, str]:
    """Settings for `spotq run` against this session's cluster and moto, with short waits for fast tests."""
    return {
        **moto.env(),
        "SPOTQ_QUEUE__URL": queue,
        "SPOTQ_QUEUE__WAIT_SECONDS": "1",
        "SPOTQ_QUEUE__RETRY_DELAY_SECONDS": "1",
        "SPOTQ_AWS__ENDPOINT_URL": moto.endpoint_url,
        "SPOTQ_AWS__REGION": moto.region,
        "SPOTQ_KUBE__KUBECONFIG": str(local_cluster.kubeconfig_path),
        "SPOTQ_DRAIN__RETRY_MAX_SECONDS": "1",
    }
