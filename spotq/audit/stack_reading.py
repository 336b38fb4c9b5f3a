"""The audit's AWS edge: read the queue's ARN and policy and the EventBridge rules that target it. Read-only
(sqs:GetQueueAttributes, events:ListRuleNamesByTarget, events:DescribeRule); a refusal or an outage is a Stack
with `error` set, never an exception: the cluster's verdict still stands."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spotq.aws.session import open_client
from spotq.settings import AwsSettings

from .stack import Route, Rule, Stack, parse_pattern


async def read_stack(aws: AwsSettings, queue_url: str, routes: tuple[Route, ...]) -> Stack:
    try:
        async with AsyncExitStack() as stack:
            sqs = await open_client(stack, "sqs", aws, max_pool=4)
            events = await open_client(stack, "events", aws, max_pool=4)
            reply = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn", "Policy"])
            attributes = reply.get("Attributes") or {}
            queue_arn = str(attributes.get("QueueArn", ""))
            rules = [await _rule(events, name) for name in await _rule_names(events, queue_arn)]
    except ClientError as exc:
        error = exc.response.get("Error") or {}
        return Stack(queue_url, error=f"cannot read the stack: {error.get('Code', '?')} {error.get('Message', '')}")
    except (BotoCoreError, OSError) as exc:
        return Stack(queue_url, error=f"cannot read the stack: {exc}")
    return Stack(
        queue_url,
        queue_arn=queue_arn,
        rules=tuple(rules),
        policy=_policy(attributes.get("Policy")),
        routes=routes,
    )


async def _rule_names(events: Any, queue_arn: str) -> list[str]:
    names: list[str] = []
    query: dict[str, str] = {"TargetArn": queue_arn}
    while True:
        page = await events.list_rule_names_by_target(**query)
        names.extend(page.get("RuleNames") or [])
        token = page.get("NextToken")
        if not token:
            return names
        query = {"TargetArn": queue_arn, "NextToken": token}


async def _rule(events: Any, name: str) -> Rule:
    described = await events.describe_rule(Name=name)
    return Rule(
        name=name,
        arn=str(described.get("Arn", "")),
        enabled=described.get("State") == "ENABLED",
        pattern=parse_pattern(described.get("EventPattern")),
    )


def _policy(text: Any) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        policy = json.loads(str(text))
    except json.JSONDecodeError:
        return None
    return policy if isinstance(policy, dict) else None
