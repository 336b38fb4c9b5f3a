"""infra/cloudformation/spotq.yaml as written: clean under cfn-lint, and its policies say exactly what they should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .support import CFN_TEMPLATE, JSON, REPO, SPOTQ_AWS_ACTIONS, as_list, load_cfn


@pytest.fixture(scope="module")
def template() -> JSON:
    return load_cfn()


def _resources(template: JSON, type_: str) -> dict[str, JSON]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_}


# -- the template as written ----------------------------------------------------------------------------------


def test_template_passes_cfn_lint_including_informational_checks() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), "--include-checks", "I", "--", str(CFN_TEMPLATE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_parameter_has_a_default_so_the_stack_deploys_as_is(template: JSON) -> None:
    assert template["Parameters"]
    assert [name for name, p in template["Parameters"].items() if "Default" not in p] == []


def test_queue_keeps_notices_five_minutes_encrypted_by_sqs_and_redrives_to_a_dead_letter_queue(
    template: JSON,
) -> None:
    queue = template["Resources"]["Queue"]["Properties"]
    params = template["Parameters"]
    assert queue["MessageRetentionPeriod"] == {"Ref": "MessageRetentionSeconds"}
    assert params["MessageRetentionSeconds"]["Default"] == 300
    # An AWS-managed KMS key would stop EventBridge from delivering: SQS-managed SSE, no KmsMasterKeyId.
    assert queue["SqsManagedSseEnabled"] is True
    assert "KmsMasterKeyId" not in queue
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert template["Resources"]["DeadLetterQueue"]["Properties"]["SqsManagedSseEnabled"] is True


def _unconditional(rules: dict[str, JSON]) -> dict[str, JSON]:
    return {name: r for name, r in rules.items() if "Condition" not in r}


def test_six_rules_send_each_notice_kind_to_the_queue_and_launch_hooks_are_optional(template: JSON) -> None:
    rules = _resources(template, "AWS::Events::Rule")

    def patterns(selected: dict[str, JSON]) -> set[tuple[tuple[str, ...], tuple[str, ...]]]:
        return {
            (tuple(r["Properties"]["EventPattern"]["source"]), tuple(r["Properties"]["EventPattern"]["detail-type"]))
            for r in selected.values()
        }

    assert patterns(_unconditional(rules)) == {
        (("aws.ec2",), ("EC2 Spot Instance Interruption Warning",)),
        (("aws.ec2",), ("EC2 Capacity Reservation Instance Interruption Warning",)),
        (("aws.ec2",), ("EC2 Instance Rebalance Recommendation",)),
        (("aws.ec2",), ("EC2 Instance State-change Notification",)),
        (("aws.autoscaling",), ("EC2 Instance-terminate Lifecycle Action",)),
        (("aws.health",), ("AWS Health Event",)),
    }
    optional = {name: r for name, r in rules.items() if "Condition" in r}
    assert patterns(optional) == {(("aws.autoscaling",), ("EC2 Instance-launch Lifecycle Action",))}
    assert [r["Condition"] for r in optional.values()] == ["SendLaunchLifecycleEvents"]
    assert template["Parameters"]["LaunchLifecycleEvents"]["Default"] == "false"
    for rule in rules.values():
        assert rule["Properties"]["State"] == "ENABLED"
        assert [t["Arn"] for t in rule["Properties"]["Targets"]] == [{"Fn::GetAtt": ["Queue", "Arn"]}]
    by_type = {
        r["Properties"]["EventPattern"]["detail-type"][0]: r["Properties"]["EventPattern"] for r in rules.values()
    }
    leaving = ["stopping", "stopped", "shutting-down", "terminated"]
    assert by_type["EC2 Instance State-change Notification"]["detail"] == {
        "state": {"Fn::If": ["SendReturningInstances", [*leaving, "running"], leaving]}
    }
    assert template["Parameters"]["ReturningInstanceEvents"]["Default"] == "true"
    assert by_type["AWS Health Event"]["detail"] == {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]}
    scoped = {
        "Fn::If": [
            "HasLifecycleGroups",
            {"AutoScalingGroupName": {"Ref": "LifecycleGroupNames"}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    assert by_type["EC2 Instance-terminate Lifecycle Action"]["detail"] == scoped
    assert by_type["EC2 Instance-launch Lifecycle Action"]["detail"] == scoped
    assert template["Parameters"]["LifecycleGroupNames"]["Default"] == ""


def test_queue_policy_lets_only_eventbridge_send_and_only_from_the_stacks_rules(template: JSON) -> None:
    (policy,) = _resources(template, "AWS::SQS::QueuePolicy").values()
    assert policy["Properties"]["Queues"] == [{"Ref": "Queue"}]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert len(allows) == 1
    (allow,) = allows
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert as_list(allow["Action"]) == ["sqs:SendMessage"]
    assert allow["Resource"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert list(allow["Condition"]) == ["ArnEquals"]
    source_arns = allow["Condition"]["ArnEquals"]["aws:SourceArn"]
    rules = _resources(template, "AWS::Events::Rule")
    always = [{"Fn::GetAtt": [name, "Arn"]} for name in _unconditional(rules)]
    assert len(always) == 6
    # The optional rule's ARN is there exactly when the rule is.
    sometimes = [
        {"Fn::If": [r["Condition"], {"Fn::GetAtt": [name, "Arn"]}, {"Ref": "AWS::NoValue"}]}
        for name, r in rules.items()
        if "Condition" in r
    ]
    assert sorted(source_arns, key=str) == sorted(always + sometimes, key=str)
    # Everything else is a denial (plain-HTTP requests).
    for statement in statements:
        if statement is not allow:
            assert statement["Effect"] == "Deny"
            assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_irsa_role_is_optional_and_grants_exactly_what_spotq_calls(template: JSON) -> None:
    role = template["Resources"]["Role"]
    assert role["Condition"] == "CreateRole"
    assert template["Conditions"]["CreateRole"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OidcProvider"}, ""]}]}
    assert template["Parameters"]["OidcProvider"]["Default"] == ""
    statements = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert all(s["Effect"] == "Allow" for s in statements)
    granted = {action for s in statements for action in as_list(s["Action"])}
    assert granted == SPOTQ_AWS_ACTIONS
    by_action = {action: s["Resource"] for s in statements for action in as_list(s["Action"])}
    for action in SPOTQ_AWS_ACTIONS:
        if action.startswith("sqs:"):
            assert by_action[action] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert by_action["ec2:DescribeInstances"] == "*"  # it has no resource-level permissions
    assert "autoScalingGroup" in by_action["autoscaling:CompleteLifecycleAction"]["Fn::Sub"]
    assert ":rule/*" in by_action["events:DescribeRule"]["Fn::Sub"]
    outputs = template["Outputs"]
    assert outputs["RoleARN"]["Condition"] == "CreateRole"
    assert {"QueueURL", "QueueARN", "RoleARN"} <= set(outputs)
