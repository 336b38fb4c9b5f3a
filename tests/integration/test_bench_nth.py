"""The benchmark's EC2 side for aws-node-termination-handler, against moto: the instances it looks up describe the
Spot nodes as NTH needs them (its node name from PrivateDnsName, its managed tag), also through the one endpoint
that routes EC2 to moto."""

from __future__ import annotations

import boto3
import pytest

from bench import nth
from bench.aws_router import AwsRouter
from testenv import MotoServer
from testenv.aws import CREDENTIALS, REGION

pytestmark = pytest.mark.integration

NODES = [
    ("ip-10-0-1-4.ec2.internal", "i-0aaaaaaaaaaaaaaa1", "us-east-1a"),
    ("ip-10-0-1-5.ec2.internal", "i-0aaaaaaaaaaaaaaa2", "us-east-1a"),
    ("ip-10-0-65-4.ec2.internal", "i-0bbbbbbbbbbbbbbb1", "us-east-1b"),
]


def test_instances_describe_the_nodes_as_nth_looks_them_up(moto: MotoServer) -> None:
    nth.register_instances(moto, NODES)
    router = AwsRouter({"ec2": moto.endpoint_url}).start()
    try:
        ec2 = boto3.client("ec2", endpoint_url=router.url, region_name=REGION, **CREDENTIALS)
        for name, instance_id, zone in NODES:
            reply = ec2.describe_instances(InstanceIds=[instance_id])  # what NTH sends for each message
            (instance,) = reply["Reservations"][0]["Instances"]
            assert instance["PrivateDnsName"] == name
            assert instance["Placement"]["AvailabilityZone"] == zone
            assert instance["State"]["Name"] == "running"
            assert {"Key": nth.MANAGED_TAG, "Value": "true"} in instance["Tags"]
        _, calls = router.since((0, {}))
        assert calls == {"ec2 DescribeInstances": len(NODES)}
        assert len(router.describe_seconds) == len(NODES)
    finally:
        router.stop()


def test_a_node_name_without_an_ip_is_refused(moto: MotoServer) -> None:
    with pytest.raises(ValueError, match="does not carry an IP"):
        nth.register_instances(moto, [("spot-node-1", "i-0ccccccccccccccc1", "us-east-1a")])
