"""Faults of the queue: the SQS endpoint hung or refusing connections while the drains finish, every warning
delivered three times plus a state change for the same instances, and a flood of bad bodies around a few real
warnings.

The drains need no SQS; what an outage can break is the messages' fate (deleted too early: an interruption lost;
never deleted: redelivered for ever) and spotq's readiness (it must say not-ready while it cannot receive, and
come back by itself).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from faults import measure
from faults.env import Environment
from faults.measure import Figures
from faults.trial import Options, Trial
from faults.wave import Shape, spot_warning, state_change


def sqs_hung(env: Environment, opts: Options) -> Figures:
    return _outage(env, opts, "sqs-hung", "hung", env.sqs.hang, env.sqs.unhang)


def sqs_refused(env: Environment, opts: Options) -> Figures:
    return _outage(env, opts, "sqs-refused", "refusing connections", env.sqs.proxy.refuse, env.sqs.proxy.reopen)


def _outage(
    env: Environment, opts: Options, name: str, how: str, begin: Callable[[], object], end: Callable[[], None]
) -> Figures:
    trial = Trial(env, opts, name, f"SQS endpoint {how} {opts.sqs_outage:g} s mid-wave")
    proc = env.spotq("spotq-0")
    trial.interrupt()
    trial.mid_wave(0.2)
    detail = begin()
    began = time.time()
    time.sleep(opts.sqs_outage)
    end()
    ended = time.time()
    trial.settle()
    found = trial.finish(serving=[proc])
    ready = trial.sampler.ready_again(proc.label, ended)
    receive = env.sqs.proxy.receiving_again(ended)
    measure.resumed(
        found, {"receiving": measure.since(receive, ended)},
        "endpoint back → a ReceiveMessage of spotq's pending that succeeds (at the proxy)",
    )  # fmt: skip
    # Not-ready while it cannot receive, ready again once it can (issue 11's "reports not-ready while it cannot work").
    found.own_targets[f"ready <= {measure.RESUME_TARGET_SECONDS:g} s after"] = (
        ready is not None and ready - ended <= measure.RESUME_TARGET_SECONDS
    )
    accepted = trial.audit.accepted(trial.wave.namespace)
    found.details.update(
        {
            "outage": detail if isinstance(detail, str) else how,
            "outage_began_seconds": round(began - trial.wave.event_time, 1),
            "ready_again_after_seconds": None if ready is None else round(ready - ended, 1),
            "receives_around_outage": [
                (round(a - ended, 1), round(done - ended, 1))
                for a, done in env.sqs.proxy.record.receives_ok
                if began - 25 <= done <= ended + 60
            ],
            "not_ready_samples_during_outage": trial.sampler.not_ready(proc.label, began + 3, ended),
            "not_ready_after_outage": trial.sampler.reasons(proc.label, ended, ended + 60),
            "evictions_during_outage": sum(1 for done in accepted.values() if began <= done[0].at <= ended),
            "drains_finished_during_outage": sum(
                1
                for i in trial.interruptions
                if (t := trial.poller.nodes[i.node].first_drain("finished")) is not None and began <= t <= ended
            ),
        }
    )
    return found


def duplicates(env: Environment, opts: Options) -> Figures:
    """Every warning three times at once (EventBridge and SQS both deliver at least once), and an EC2 state change
    (shutting-down) for every instance mid-wave: one drain per node, one eviction per pod."""
    trial = Trial(env, opts, "duplicates", "every warning 3x, plus a state change for the same instances")
    proc = env.spotq("spotq-0")
    trial.interrupt(copies=3)
    trial.mid_wave(0.3)
    for item in trial.interruptions:
        trial.also_send(item.instance, state_change(item.instance, time.time()))
    trial.settle()
    found = trial.finish(serving=[proc])
    found.details["messages"] = sum(len(i.messages) for i in trial.interruptions)
    return found


def poison_flood(env: Environment, opts: Options) -> Figures:
    """`flood` bad bodies with `flood_real` real warnings among them, all sent at once: every real node marked and
    drained in time, every bad body deleted, no crash."""
    shape = Shape(opts.flood_real, opts.pods_per_node, opts.grace_seconds, opts.max_unavailable,
                  ready_delay=opts.ready_delay)  # fmt: skip
    trial = Trial(env, opts, "poison-flood", f"{opts.flood} bad bodies with {opts.flood_real} real warnings",
                  shape=shape)  # fmt: skip
    proc = env.spotq("spotq-0")
    rng = random.Random(11)
    bad = [bad_body(i, rng) for i in range(opts.flood)]
    real = trial.wave.warnings()
    pods = trial.pods_on(trial.wave.names)
    order = bad + real
    rng.shuffle(order)
    sent_at = time.time()
    ids = env.sqs.send(order)
    sent = time.time()
    by_body = dict(zip(order, ids, strict=True))
    for node, body in zip(trial.wave.nodes, real, strict=True):
        trial.interruptions.append(
            measure.Interruption(node.node_name, node.instance_id, trial.wave.event_time, [by_body[body]],
                                 pods[node.node_name])
        )  # fmt: skip
    trial.settle()
    found = trial.finish(serving=[proc])
    marked = [s.marked for s in trial.poller.nodes.values() if s.marked is not None]
    deleted = env.sqs.proxy.deleted()
    bad_ids = [by_body[b] for b in bad]
    found.details.update(
        {
            "send_seconds": round(sent - sent_at, 1),
            "all_real_marked_seconds": round(max(marked) - sent_at, 1) if len(marked) == len(real) else None,
            "bad_deleted": sum(1 for m in bad_ids if m in deleted),
            "all_deleted_seconds": round(max(deleted.values()) - sent_at, 1) if len(deleted) == len(order) else None,
            "bad_kinds": sorted({kind for kind, _ in BAD_KINDS}),
        }
    )
    return found


def _spot(instance: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(spot_warning(instance, time.time()))
    return doc


def _health(instances: int) -> str:
    entities = [{"entityValue": f"i-{n:017x}"} for n in range(instances)]
    return json.dumps(
        {
            "version": "0", "id": "h", "detail-type": "AWS Health Event", "source": "aws.health",
            "account": "123456789012", "time": "2025-06-01T06:27:57Z", "region": "us-east-1",
            "detail": {"service": "EC2", "eventTypeCategory": "scheduledChange", "statusCode": "upcoming",
                       "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
                       "startTime": "Sun, 15 Jun 2025 15:10:09 GMT", "affectedEntities": entities},
        }
    )  # fmt: skip


def _sns(body: str, depth: int) -> str:
    for _ in range(depth):
        body = json.dumps({"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:t", "Message": body})
    return body


# Bad bodies, one kind after another; `bad_body` varies them. None of them names an instance of this cluster, and
# none is a valid notice for an unknown instance (that would need EC2, which the queue endpoint is not).
BAD_KINDS: list[tuple[str, Callable[[int, random.Random], str]]] = [
    ("not JSON", lambda i, r: f"not json {{ {i}"),
    ("truncated JSON", lambda i, r: json.dumps(_spot("i-0123456789abcdef0"))[: r.randrange(5, 60)]),
    ("JSON array", lambda i, r: json.dumps([i, "x", None])),
    ("JSON scalar", lambda i, r: json.dumps(i)),
    ("bad instance id", lambda i, r: json.dumps(_spot(f"i-NOTHEX{i:05d}"))),
    ("unknown detail-type", lambda i, r: json.dumps({**_spot("i-0123456789abcdef0"), "detail-type": f"Thing {i}"})),
    ("bad time", lambda i, r: json.dumps({**_spot("i-0123456789abcdef0"), "time": "yesterday"})),
    ("detail not an object", lambda i, r: json.dumps({**_spot("i-0123456789abcdef0"), "detail": [i]})),
    ("SNS nested 6 deep", lambda i, r: _sns(json.dumps(_spot("i-0123456789abcdef0")), 6)),
    ("deeply nested JSON", lambda i, r: "[" * 50_000 + "]" * 50_000),
    ("Health event naming 1001 instances", lambda i, r: _health(1001)),
    ("200 KB string", lambda i, r: json.dumps({"detail-type": "x" * 200_000})),
]


def bad_body(i: int, rng: random.Random) -> str:
    """Mostly the cheap kinds; one in fifty of the big ones (nested, 1001 instances, 200 KB)."""
    kinds = BAD_KINDS[:9] if i % 50 else BAD_KINDS[9:]
    _, make = kinds[rng.randrange(len(kinds))]
    return make(i, rng)
