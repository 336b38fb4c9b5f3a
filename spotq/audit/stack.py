"""The audit's stack check: does every kind of event spotq handles reach its queue? Pure: the stack's rules and the
queue's policy in (read by audit.stack_reading), findings out.

For each route (a kind of event spotq's settings act on) there must be an ENABLED EventBridge rule on the default
bus, with the queue as a target, whose pattern matches a sample of that event, and the queue's policy must let
EventBridge send from that rule. A pattern's filters on fields the sample does not speak for (instance IDs, group
names, accounts) narrow what a rule covers and are not judged (patterns.narrowed).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spotq.settings import ActionLevel, Settings

from .checks import Finding, Severity
from .patterns import matches, narrowed

JSON = dict[str, Any]
EVENTS_PRINCIPAL = "events.amazonaws.com"


@dataclass(frozen=True)
class Route:
    """One kind of event spotq acts on, as EventBridge delivers it."""

    name: str  # as a finding names it
    source: str
    detail_type: str
    detail: JSON  # the fields of the sample event a rule's pattern is judged on
    severity: Severity
    lost: str  # what goes wrong when no rule sends it

    def sample(self) -> JSON:
        return {"source": self.source, "detail-type": self.detail_type, "detail": self.detail}


_EC2 = "aws.ec2"
_ASG = "aws.autoscaling"
_STATE = "EC2 Instance State-change Notification"
_SPOT = Route(
    "Spot interruption warning", _EC2, "EC2 Spot Instance Interruption Warning",
    {"instance-id": "", "instance-action": "terminate"}, Severity.HIGH,
    "spotq never hears of a Spot interruption: the nodes die with their pods",
)  # fmt: skip
_CAPACITY_RESERVATION = Route(
    "Capacity Reservation interruption warning", _EC2, "EC2 Capacity Reservation Instance Interruption Warning",
    {"instance-id": "", "instance-action": "terminate"}, Severity.WARNING,
    "instances reclaimed from an interruptible Capacity Reservation die with their pods",
)  # fmt: skip
_REBALANCE = Route(
    "rebalance recommendation", _EC2, "EC2 Instance Rebalance Recommendation", {"instance-id": ""},
    Severity.WARNING, "no early notice before an interruption: nodes at risk still get new pods",
)  # fmt: skip
_STOPPING = tuple(
    Route(
        f"state change to {state}", _EC2, _STATE, {"instance-id": "", "state": state}, Severity.WARNING,
        f"an instance {state} without a Spot warning (on-demand, scale-in, by hand) is not drained",
    )
    for state in ("stopping", "stopped", "shutting-down", "terminated")
)  # fmt: skip
_RETURNING = Route(
    "state change to running", _EC2, _STATE, {"instance-id": "", "state": "running"}, Severity.WARNING,
    "a stopped or hibernated Spot instance that comes back keeps spotq's marks (cordoned for good)",
)  # fmt: skip
_TERMINATE_HOOK = Route(
    "Auto Scaling terminate lifecycle action", _ASG, "EC2 Instance-terminate Lifecycle Action",
    {"LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}, Severity.WARNING,
    "a scale-in or instance refresh waits out its terminate hook's timeout and takes the node without a drain",
)  # fmt: skip
_LAUNCH_HOOK = Route(
    "Auto Scaling launch lifecycle action", _ASG, "EC2 Instance-launch Lifecycle Action",
    {"LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}, Severity.HIGH,
    "SPOTQ_POLICY__COMPLETE_LIFECYCLE_LAUNCH is on, but launches wait out their hook's timeout",
)  # fmt: skip
_SCHEDULED_CHANGE = Route(
    "AWS Health EC2 scheduled change", "aws.health", "AWS Health Event",
    {"service": "EC2", "eventTypeCategory": "scheduledChange"}, Severity.WARNING,
    "instances retired or rebooted for maintenance are not drained beforehand",
)  # fmt: skip


def routes(settings: Settings) -> tuple[Route, ...]:
    """The routes spotq's policy acts on (a kind set to `none` needs no rule)."""
    policy = settings.policy

    def acts(level: ActionLevel) -> bool:
        return level is not ActionLevel.NONE

    chosen: list[Route] = []
    if acts(policy.spot_interruption):
        chosen.append(_SPOT)
    if acts(policy.capacity_reservation_interruption):
        chosen.append(_CAPACITY_RESERVATION)
    if acts(policy.rebalance_recommendation):
        chosen.append(_REBALANCE)
    if acts(policy.state_change):
        chosen.extend((*_STOPPING, _RETURNING))
    if acts(policy.lifecycle_terminate):
        chosen.append(_TERMINATE_HOOK)
    if policy.complete_lifecycle_launch:
        chosen.append(_LAUNCH_HOOK)
    if acts(policy.scheduled_change):
        chosen.append(_SCHEDULED_CHANGE)
    return tuple(chosen)


@dataclass(frozen=True)
class Rule:
    name: str
    arn: str
    enabled: bool
    pattern: JSON | None  # None: a scheduled rule, or a pattern that is not JSON


@dataclass(frozen=True)
class Stack:
    """What the audit read of the queue and the rules that target it. `error` set: it could not be read."""

    queue_url: str
    queue_arn: str = ""
    rules: tuple[Rule, ...] = ()
    policy: JSON | None = None  # the queue's access policy; None: it has none
    error: str = ""
    routes: tuple[Route, ...] = ()


def check(stack: Stack) -> list[Finding]:
    """stack-not-checked (the stack could not be read), stack-rule-missing (no enabled rule sends a route to the
    queue), stack-rule-refused (rules send it, but the queue's policy refuses EventBridge from all of them)."""
    if stack.error:
        return [
            Finding(
                "stack-not-checked",
                Severity.WARNING,
                "Queue",
                "",
                stack.queue_url,
                f"{stack.error}: whether EventBridge sends spotq's events to the queue is unknown (the audit needs "
                "sqs:GetQueueAttributes, events:ListRuleNamesByTarget and events:DescribeRule)",
            )
        ]
    findings = []
    for route in stack.routes:
        sending = [rule for rule in stack.rules if rule.pattern is not None and _sends(rule.pattern, route)]
        enabled = [rule for rule in sending if rule.enabled]
        if not enabled:
            names = ", ".join(rule.name for rule in sending)
            disabled = f" (rule {names} matches it but is disabled)" if sending else ""
            detail = (
                f"no enabled EventBridge rule on the default bus sends {route.source} '{route.detail_type}' to "
                f"the queue{disabled}: {route.lost}"
            )
            findings.append(Finding("stack-rule-missing", route.severity, "Event", "", route.name, detail))
            continue
        if not any(_allowed(stack.policy, rule.arn, stack.queue_arn) for rule in enabled):
            names = ", ".join(rule.name for rule in enabled)
            why = "the queue has no access policy" if stack.policy is None else "the queue's policy does not allow it"
            detail = (
                f"rule {names} sends it, but {why}: EventBridge's deliveries from it fail ({EVENTS_PRINCIPAL} "
                f"needs sqs:SendMessage with aws:SourceArn the rule's ARN): {route.lost}"
            )
            findings.append(Finding("stack-rule-refused", route.severity, "Event", "", route.name, detail))
    return findings


def _sends(pattern: JSON, route: Route) -> bool:
    sample = route.sample()
    return matches(narrowed(pattern, sample), sample)


def parse_pattern(text: str | None) -> JSON | None:
    if not text:
        return None
    try:
        pattern = json.loads(text)
    except json.JSONDecodeError:
        return None
    return pattern if isinstance(pattern, dict) else None


# -- the queue's access policy ------------------------------------------------------------------------------------


def _allowed(policy: JSON | None, rule_arn: str, queue_arn: str) -> bool:
    """Whether the policy lets EventBridge send to the queue from `rule_arn`: an Allow for the events principal
    (or everyone) on sqs:SendMessage and the queue, whose aws:SourceArn condition, if any, names the rule; and no
    unconditional Deny of the same. Other condition keys (aws:SourceAccount, ...) are not judged."""
    if policy is None:
        return False
    allowed = False
    for statement in _statements(policy):
        if not (_for_events(statement) and _on_send(statement) and _on_queue(statement, queue_arn)):
            continue
        effect = str(statement.get("Effect", ""))
        condition = statement.get("Condition")
        if effect == "Deny" and not condition:
            return False
        if effect == "Allow" and _source_arn_allows(condition, rule_arn):
            allowed = True
    return allowed


def _statements(policy: JSON) -> list[Mapping[str, Any]]:
    statements = policy.get("Statement") or []
    if isinstance(statements, Mapping):
        statements = [statements]
    return [s for s in statements if isinstance(s, Mapping)]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [str(each) for each in value]
    return []


def _for_events(statement: Mapping[str, Any]) -> bool:
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    return EVENTS_PRINCIPAL in _strings(principal.get("Service")) or "*" in _strings(principal.get("AWS"))


def _on_send(statement: Mapping[str, Any]) -> bool:
    return any(fnmatch.fnmatchcase("sqs:sendmessage", action.lower()) for action in _strings(statement.get("Action")))


def _on_queue(statement: Mapping[str, Any], queue_arn: str) -> bool:
    resources = _strings(statement.get("Resource"))
    return not resources or any(fnmatch.fnmatchcase(queue_arn, resource) for resource in resources)


def _source_arn_allows(condition: Any, rule_arn: str) -> bool:
    if not isinstance(condition, Mapping):
        return True
    for op, tests in condition.items():
        if not isinstance(tests, Mapping):
            continue
        for key, values in tests.items():
            if key.lower() != "aws:sourcearn":
                continue
            wanted = _strings(values)
            if op in ("ArnEquals", "StringEquals") and rule_arn not in wanted:
                return False
            if op in ("ArnLike", "StringLike") and not any(fnmatch.fnmatchcase(rule_arn, w) for w in wanted):
                return False
    return True
