"""infra/cloudformation/spotq.yaml deployed into moto: the sample events put on the default bus reach the queue."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator

import pytest

from testenv import MotoServer

from .support import JSON, SPOTQ_AWS_ACTIONS, as_list, create_stack, explain, sample_event

# moto's CloudFormation does not implement AWS::SQS::QueuePolicy (and moto enforces no queue policy): the policy is
# proven by reading the template in test_cloudformation.py.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning"),
]

# spotq's notice kind for each sample event the stack must deliver.
SAMPLES = {
    "spot-interruption-warning.json": "spot_interruption",
    "capacity-reservation-interruption.json": "capacity_reservation_interruption",
    "rebalance-recommendation.json": "rebalance_recommendation",
    "state-change-shutting-down.json": "state_change",
    "lifecycle-terminate.json": "lifecycle_terminate",
    "health-scheduled-change.json": "scheduled_change",
}

OIDC_PROVIDER = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71"


def _document(value: JSON | str) -> JSON:
    """A policy document as IAM returns it; moto keeps an inline policy given as an object as its Python repr."""
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = ast.literal_eval(value)
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer) -> dict[str, str]:
    """The stack deployed with every parameter at its default."""
    return create_stack(moto_server)


@pytest.fixture
def queue_url(stack: dict[str, str], moto_server: MotoServer) -> Iterator[str]:
    """The stack's queue, empty before and after the test."""
    _drain(moto_server, stack["QueueURL"])
    yield stack["QueueURL"]
    _drain(moto_server, stack["QueueURL"])


def _drain(moto: MotoServer, url: str) -> list[JSON]:
    sqs = moto.client("sqs")
    messages: list[JSON] = []
    while True:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        batch = reply.get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        messages += batch


def _put(moto: MotoServer, event: JSON) -> None:
    reply = moto.client("events").put_events(
        Entries=[
            {
                "Source": event["source"],
                "DetailType": event["detail-type"],
                "Detail": json.dumps(event["detail"]),
                "Resources": event.get("resources", []),
            }
        ]
    )
    assert reply["FailedEntryCount"] == 0, reply


def test_stack_with_default_parameters_creates_the_queue_and_no_role(
    moto_server: MotoServer, stack: dict[str, str]
) -> None:
    assert {"QueueURL", "QueueARN", "DeadLetterQueueURL"} <= set(stack)
    assert "RoleARN" not in stack
    sqs = moto_server.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=stack["QueueURL"], AttributeNames=["All"])["Attributes"]
    assert attributes["QueueArn"] == stack["QueueARN"]
    assert attributes["MessageRetentionPeriod"] == "300"
    assert attributes["SqsManagedSseEnabled"] == "true"
    dlq_arn = sqs.get_queue_attributes(QueueUrl=stack["DeadLetterQueueURL"], AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
    resources = moto_server.client("cloudformation").list_stack_resources(StackName=stack["StackName"])
    types = sorted(r["ResourceType"] for r in resources["StackResourceSummaries"])
    assert "AWS::IAM::Role" not in types
    assert types.count("AWS::Events::Rule") == 6


def test_stack_with_an_oidc_provider_creates_an_irsa_role_for_the_service_account(moto_server: MotoServer) -> None:
    outputs = create_stack(
        moto_server,
        {"OidcProvider": OIDC_PROVIDER, "ServiceAccountNamespace": "kube-system", "ServiceAccountName": "spotq"},
    )
    iam = moto_server.client("iam")
    role_name = outputs["RoleARN"].rsplit("/", 1)[1]
    trust = _document(iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"])
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{OIDC_PROVIDER}"}
    assert statement["Condition"] == {
        "StringEquals": {
            f"{OIDC_PROVIDER}:sub": "system:serviceaccount:kube-system:spotq",
            f"{OIDC_PROVIDER}:aud": "sts.amazonaws.com",
        }
    }
    (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    document = _document(iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"])
    granted = {a for s in document["Statement"] for a in as_list(s["Action"])}
    assert granted == SPOTQ_AWS_ACTIONS
    sqs_resources = {s["Resource"] for s in document["Statement"] if as_list(s["Action"])[0].startswith("sqs:")}
    assert sqs_resources == {outputs["QueueARN"]}


@pytest.mark.parametrize(("sample", "kind"), SAMPLES.items(), ids=list(SAMPLES))
def test_each_sample_event_put_on_the_default_bus_reaches_the_queue_and_spotq_classifies_it(
    moto_server: MotoServer, queue_url: str, sample: str, kind: str
) -> None:
    event = sample_event(sample)
    _put(moto_server, event)

    (message,) = _drain(moto_server, queue_url)
    body = json.loads(message["Body"])
    assert (body["source"], body["detail-type"], body["detail"]) == (
        event["source"],
        event["detail-type"],
        event["detail"],
    )
    verdict = explain(message["Body"])
    assert verdict["kind"] == kind
    assert verdict["instance_ids"] == explain(json.dumps(event))["instance_ids"]
    assert verdict["instance_ids"]


@pytest.mark.parametrize(
    "change",
    [
        {"detail": {"instance-id": "i-0b662ef9931388ba0", "state": "pending"}},
        {
            "source": "aws.health",
            "detail-type": "AWS Health Event",
            "detail": {"service": "EC2", "eventTypeCategory": "issue"},
        },
        {
            "source": "aws.health",
            "detail-type": "AWS Health Event",
            "detail": {"service": "RDS", "eventTypeCategory": "scheduledChange"},
        },
        {"source": "aws.autoscaling", "detail-type": "EC2 Instance-launch Lifecycle Action", "detail": {}},
    ],
    ids=["state-pending", "health-issue", "health-rds", "lifecycle-launch-by-default"],
)
def test_events_spotq_does_not_act_on_are_not_delivered(moto_server: MotoServer, queue_url: str, change: JSON) -> None:
    event = sample_event("state-change-shutting-down.json") | change
    _put(moto_server, event)
    assert _drain(moto_server, queue_url) == []


def test_an_instance_running_again_is_delivered_unless_the_stack_turns_it_off(
    moto_server: MotoServer, queue_url: str
) -> None:
    """A stopped Spot instance that returns releases its node's marks: the default stack sends `running`."""
    running = sample_event("state-change-shutting-down.json") | {
        "detail": {"instance-id": "i-0b662ef9931388ba0", "state": "running"}
    }
    _put(moto_server, running)
    (message,) = _drain(moto_server, queue_url)
    assert explain(message["Body"])["actions"] == ["release_on_return"]
    quiet = create_stack(moto_server, {"ReturningInstanceEvents": "false"})
    _put(moto_server, running)
    assert _drain(moto_server, quiet["QueueURL"]) == []
    _drain(moto_server, queue_url)  # the default stack's queue got it again


def _launch_event() -> JSON:
    event = sample_event("lifecycle-terminate.json")
    event["detail-type"] = "EC2 Instance-launch Lifecycle Action"
    event["detail"] |= {
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
        "Origin": "EC2",
        "Destination": "AutoScalingGroup",
    }
    return event


def test_launch_lifecycle_events_are_delivered_when_the_stack_asks_for_them(moto_server: MotoServer) -> None:
    outputs = create_stack(moto_server, {"LaunchLifecycleEvents": "true"})
    resources = moto_server.client("cloudformation").list_stack_resources(StackName=outputs["StackName"])
    assert [r["ResourceType"] for r in resources["StackResourceSummaries"]].count("AWS::Events::Rule") == 7
    _put(moto_server, _launch_event())
    (message,) = _drain(moto_server, outputs["QueueURL"])
    assert explain(message["Body"])["kind"] == "lifecycle_launch"


def test_lifecycle_rules_can_be_scoped_to_named_groups(moto_server: MotoServer) -> None:
    """The terminate rule matches every group in the account unless LifecycleGroupNames names this cluster's."""
    outputs = create_stack(
        moto_server, {"LifecycleGroupNames": "eks-spot-a,eks-spot-b", "LaunchLifecycleEvents": "true"}
    )
    ours, foreign = sample_event("lifecycle-terminate.json"), sample_event("lifecycle-terminate.json")
    ours["detail"]["AutoScalingGroupName"] = "eks-spot-b"
    foreign["detail"]["AutoScalingGroupName"] = "other-cluster-workers"
    launch = _launch_event()
    launch["detail"]["AutoScalingGroupName"] = "eks-spot-a"
    for event in (ours, foreign, launch):
        _put(moto_server, event)
    bodies = [json.loads(m["Body"]) for m in _drain(moto_server, outputs["QueueURL"])]
    assert sorted((b["detail-type"], b["detail"]["AutoScalingGroupName"]) for b in bodies) == [
        ("EC2 Instance-launch Lifecycle Action", "eks-spot-a"),
        ("EC2 Instance-terminate Lifecycle Action", "eks-spot-b"),
    ]
