"""The audit's stack check on hand-built stacks: the rules spotq's template creates pass; each way a kind of event
fails to reach the queue (no rule, a disabled rule, a narrower state list, a policy that refuses) is named."""

from __future__ import annotations

from typing import Any

import pytest

from spotq.audit import stack
from spotq.audit.checks import Severity
from spotq.audit.stack import Rule, Stack
from spotq.settings import Settings

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:spotq"
URL = "https://sqs.us-east-1.amazonaws.com/123456789012/spotq"
PATTERNS: dict[str, dict[str, Any]] = {
    "spot": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "capacity": {"source": ["aws.ec2"], "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"],
              "detail": {"state": ["stopping", "stopped", "shutting-down", "terminated", "running"]}},
    "terminate": {"source": ["aws.autoscaling"], "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
                  "detail": {"AutoScalingGroupName": ["eks-spot-a"]}},
    "health": {"source": ["aws.health"], "detail-type": ["AWS Health Event"],
               "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]}},
}  # fmt: skip


def arn(name: str) -> str:
    return f"arn:aws:events:us-east-1:123456789012:rule/{name}"


def rules(**changes: dict[str, Any] | None) -> tuple[Rule, ...]:
    patterns = {**PATTERNS, **changes}
    return tuple(Rule(name, arn(name), True, pattern) for name, pattern in patterns.items() if pattern is not None)


def policy(*rule_names: str, effect: str = "Allow", **extra: Any) -> dict[str, Any]:
    statement = {"Effect": effect, "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
                 "Resource": QUEUE_ARN, "Condition": {"ArnEquals": {"aws:SourceArn": [arn(n) for n in rule_names]}}}  # fmt: skip
    return {"Version": "2012-10-17", "Statement": [{**statement, **extra}]}


def checked(rule_set: tuple[Rule, ...], access: dict[str, Any] | None, settings: Settings | None = None) -> list[Any]:
    found = stack.check(Stack(URL, QUEUE_ARN, rule_set, access, routes=stack.routes(settings or Settings())))
    return [(f.check, f.name, f.severity) for f in found]


def test_the_templates_rules_and_policy_leave_nothing_to_report() -> None:
    assert checked(rules(), policy(*PATTERNS)) == []


def test_no_rule_for_spot_warnings_is_high_and_named() -> None:
    assert checked(rules(spot=None), policy(*PATTERNS)) == [
        ("stack-rule-missing", "Spot interruption warning", Severity.HIGH)
    ]


def test_a_disabled_rule_sends_nothing_and_the_finding_names_it() -> None:
    disabled = tuple(Rule(r.name, r.arn, r.name != "rebalance", r.pattern) for r in rules())
    found = stack.check(Stack(URL, QUEUE_ARN, disabled, policy(*PATTERNS), routes=stack.routes(Settings())))
    assert [(f.check, f.name) for f in found] == [("stack-rule-missing", "rebalance recommendation")]
    assert "rule rebalance matches it but is disabled" in found[0].detail


def test_a_state_rule_without_running_misses_only_returning_instances() -> None:
    narrower = {**PATTERNS["state"], "detail": {"state": ["stopping", "stopped", "shutting-down", "terminated"]}}
    assert checked(rules(state=narrower), policy(*PATTERNS)) == [
        ("stack-rule-missing", "state change to running", Severity.WARNING)
    ]


def test_one_broad_rule_covers_every_ec2_kind() -> None:
    broad = rules(spot=None, capacity=None, rebalance=None, state={"source": ["aws.ec2"]})
    assert checked(broad, policy(*PATTERNS)) == []


def test_no_queue_policy_refuses_every_rule() -> None:
    found = checked(rules(), None)
    assert {check for check, _, _ in found} == {"stack-rule-refused"}
    assert len(found) == len(stack.routes(Settings()))


def test_a_policy_that_names_only_some_rules_refuses_the_others() -> None:
    assert checked(rules(), policy(*(name for name in PATTERNS if name != "spot"))) == [
        ("stack-rule-refused", "Spot interruption warning", Severity.HIGH)
    ]


@pytest.mark.parametrize(
    "access",
    [
        {"Statement": {"Effect": "Allow", "Principal": "*", "Action": "sqs:*"}},
        {"Statement": [{"Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com"]},
                        "Action": ["sqs:SendMessage"], "Resource": "arn:aws:sqs:*",
                        "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/*"}}}]},
    ],
)  # fmt: skip
def test_wildcards_in_the_policy_allow(access: dict[str, Any]) -> None:
    assert checked(rules(), access) == []


def test_an_unconditional_deny_refuses_and_a_conditional_one_is_not_judged() -> None:
    allow = policy(*PATTERNS)["Statement"][0]
    deny = {"Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": QUEUE_ARN}
    secure_only = {**deny, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    assert checked(rules(), {"Statement": [allow, secure_only]}) == []
    assert {c for c, _, _ in checked(rules(), {"Statement": [allow, deny]})} == {"stack-rule-refused"}


def test_kinds_set_to_none_need_no_rule_and_launch_hooks_do_when_completed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTQ_POLICY__REBALANCE_RECOMMENDATION", "none")
    monkeypatch.setenv("SPOTQ_POLICY__COMPLETE_LIFECYCLE_LAUNCH", "true")
    assert checked(rules(rebalance=None), policy(*PATTERNS), Settings()) == [
        ("stack-rule-missing", "Auto Scaling launch lifecycle action", Severity.HIGH)
    ]


def test_a_stack_that_could_not_be_read_is_a_warning_not_a_verdict() -> None:
    found = stack.check(Stack(URL, error="cannot read the stack: AccessDenied no"))
    assert [(f.check, f.severity, f.name) for f in found] == [("stack-not-checked", Severity.WARNING, URL)]
    assert "events:ListRuleNamesByTarget" in found[0].detail


def test_a_pattern_that_is_not_a_json_object_is_no_pattern() -> None:
    assert stack.parse_pattern('{"source": ["aws.ec2"]}') == {"source": ["aws.ec2"]}
    assert stack.parse_pattern("[1]") is None and stack.parse_pattern("{") is None and stack.parse_pattern(None) is None
