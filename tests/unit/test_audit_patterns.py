"""EventBridge pattern matching for the audit's stack check: each matcher form matches what EventBridge's
documented rule matches and refuses its near miss."""

from __future__ import annotations

from typing import Any

import pytest

from spotq.audit.patterns import matches, narrowed

EVENT: dict[str, Any] = {
    "source": "aws.ec2",
    "detail-type": "EC2 Instance State-change Notification",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-1"],
    "detail": {"instance-id": "i-1", "state": "shutting-down", "count": 5},
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"source": ["aws.ec2"]}, True),
        ({"source": ["aws.health", "aws.ec2"]}, True),
        ({"source": ["aws.autoscaling"]}, False),
        ({"source": "aws.ec2"}, False),  # a value must be a list: EventBridge refuses this rule
        ({"detail": {"state": ["shutting-down"]}}, True),
        ({"detail": {"state": ["terminated"]}}, False),
        ({"detail": {"state": [{"prefix": "shutting"}]}}, True),
        ({"detail": {"state": [{"prefix": "stop"}]}}, False),
        ({"detail": {"state": [{"suffix": "-down"}]}}, True),
        ({"detail": {"state": [{"prefix": {"equals-ignore-case": "SHUTTING"}}]}}, True),
        ({"detail-type": [{"equals-ignore-case": "ec2 instance state-change notification"}]}, True),
        ({"detail-type": [{"wildcard": "EC2 Instance *"}]}, True),
        ({"detail-type": [{"wildcard": "EC2 Spot*"}]}, False),
        ({"detail": {"state": [{"anything-but": "running"}]}}, True),
        ({"detail": {"state": [{"anything-but": ["running", "shutting-down"]}]}}, False),
        ({"detail": {"state": [{"anything-but": {"prefix": "shut"}}]}}, False),
        ({"detail": {"state": [{"exists": True}]}}, True),
        ({"detail": {"reason": [{"exists": False}]}}, True),
        ({"detail": {"reason": [{"exists": True}]}}, False),
        ({"detail": {"reason": ["x"]}}, False),  # the event lacks the field
        ({"detail": {"count": [{"numeric": [">", 0, "<=", 5]}]}}, True),
        ({"detail": {"count": [{"numeric": [">", 5]}]}}, False),
        ({"detail": {"count": ["5"]}}, False),  # a string does not match a number
        ({"resources": [{"prefix": "arn:aws:ec2:us-east-1:"}]}, True),  # any element of an array
        ({"$or": [{"source": ["aws.health"]}, {"detail": {"state": ["shutting-down"]}}]}, True),
        ({"$or": [{"source": ["aws.health"]}, {"detail": {"state": ["running"]}}]}, False),
        ({"detail": {"instance-id": [{"cidr": "10.0.0.0/8"}]}}, True),  # unknown to the audit: taken as matching
        ({"source": ["aws.ec2"], "detail": "state"}, False),
    ],
)
def test_a_pattern_matches_as_eventbridge_matches_it(pattern: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, EVENT) is expected


def test_filters_the_sample_cannot_speak_for_are_dropped_and_the_rest_judged() -> None:
    pattern = {
        "source": ["aws.autoscaling"],
        "account": ["123456789012"],
        "detail": {"AutoScalingGroupName": ["eks-spot-a"], "LifecycleTransition": ["autoscaling:X"]},
    }
    sample = {"source": "aws.autoscaling", "detail": {"LifecycleTransition": "autoscaling:Y"}}
    kept = narrowed(pattern, sample)
    assert kept == {"source": ["aws.autoscaling"], "detail": {"LifecycleTransition": ["autoscaling:X"]}}
    assert not matches(kept, sample)
    assert matches(narrowed({"source": ["aws.autoscaling"], "detail": {"AutoScalingGroupName": ["g"]}}, sample), sample)
