"""Entry: parse the command line, load settings, configure logs, run. Errors become one line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO

import pydantic

from spotq import notices, parsing, planning
from spotq import settings as settings_module
from spotq.errors import ConfigError
from spotq.observability import logs
from spotq.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """`spotq ARGS`: the process's exit status, returned (also for --help and usage errors) rather than exited."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits after --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"spotq: {exc}", file=sys.stderr)
        return 2
    if args.command == "explain":
        return explain(args.file, settings)
    if args.command == "run":
        return _run(settings)
    if args.command == "imds":
        return _imds(settings)
    if args.command == "release":
        return _release(settings, args.nodes)
    if args.command == "audit":
        return _audit(settings, args.namespace or [], args.output, check_stack=not args.no_stack)
    parser.print_help()
    return 2


def load_settings() -> Settings:
    try:
        return Settings()
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        location = "__".join(str(part) for part in error["loc"]).upper()
        raise ConfigError(f"invalid setting SPOTQ_{location}: {error['msg']}") from None
    except Exception as exc:
        raise ConfigError(f"invalid settings: {exc}") from None


def _run(settings: Settings) -> int:
    from spotq import queue_mode  # the SDKs load only for the long-running modes

    if not settings.queue.url:
        print("spotq: missing setting SPOTQ_QUEUE__URL (the SQS queue to consume)", file=sys.stderr)
        return 2
    region = aws_region(settings.aws.region, settings.queue.url, os.environ)
    if region is None:
        print("spotq: missing setting SPOTQ_AWS__REGION (or AWS_REGION; none in the queue URL either)", file=sys.stderr)
        return 2
    settings.aws.region = region
    return _serve(settings, lambda: queue_mode.run_queue_mode(settings))


def _imds(settings: Settings) -> int:
    from spotq import imds_mode  # the SDKs load only for the long-running modes

    node = imds_mode.node_name(settings, os.environ)
    if not node:
        print(
            "spotq: missing setting SPOTQ_IMDS__NODE_NAME (or NODE_NAME from the downward API): the node this pod "
            "runs on",
            file=sys.stderr,
        )
        return 2
    return _serve(settings, lambda: imds_mode.run_imds_mode(settings, node))


def _release(settings: Settings, nodes: list[str]) -> int:
    from spotq import releasing

    return _serve(settings, lambda: releasing.release(settings, nodes))


def _audit(settings: Settings, namespaces: list[str], output: str, *, check_stack: bool) -> int:
    from spotq.audit import command

    if settings.queue.url and check_stack:
        settings.aws.region = aws_region(settings.aws.region, settings.queue.url, os.environ)
    chosen: command.Output = "json" if output == "json" else "table"
    return _serve(
        settings, lambda: command.audit(settings, namespaces=namespaces, output=chosen, check_stack=check_stack)
    )


def _serve(settings: Settings, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Logging as configured, then `main` on an event loop: a configuration error is one line and exit 2."""
    logs.configure(settings.log)
    try:
        return asyncio.run(main())
    except ConfigError as exc:
        print(f"spotq: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def aws_region(configured: str | None, queue_url: str, environ: Mapping[str, str]) -> str | None:
    """SPOTQ_AWS__REGION, else the SDK's AWS_REGION / AWS_DEFAULT_REGION, else the region in the queue URL."""
    if configured:
        return configured
    from_env = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if from_env:
        return from_env
    match = re.match(r"^https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", queue_url)
    return match.group(1) if match else None


# `spotq explain` exits 0 once the body is classified (whatever its kind), 1 when it cannot be read, 2 on a wrong
# setting, and this when spotq itself failed (a bug to report, never a verdict on the body).
EXIT_INTERNAL_ERROR = 3


def explain(path: str, settings: Settings) -> int:
    """Classify one body and print what the current settings would do with it."""
    # One byte over the limit is enough to call the body too large; never hold more than that.
    limit = parsing.MAX_BODY_BYTES + 1
    try:
        if path == "-":
            body: bytes = _read_at_most(sys.stdin.buffer, limit)
        else:
            with open(path, "rb") as handle:
                body = _read_at_most(handle, limit)
    except OSError as exc:
        print(f"spotq: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        description = describe_notice(parsing.parse(body), settings)
    except Exception as exc:
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        print(
            f"spotq: internal error while classifying the body (a bug in spotq, please report it): {error}",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR
    try:
        print(json.dumps(description, indent=2), flush=True)
    except BrokenPipeError:
        # `spotq explain f | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """Up to `limit` bytes: a pipe may hand them over in several reads."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def describe_notice(notice: notices.Notice, settings: Settings) -> dict[str, Any]:
    policy = planning.Policy.from_settings(settings)
    now = datetime.now(UTC)
    plan = planning.plan(notice, policy, notice.event_time or now)
    out: dict[str, Any] = {
        "kind": notice.kind.value,
        "instance_ids": list(notice.instance_ids),
        "event_id": notice.event_id,
        "event_time": _iso(notice.event_time),
        "deadline": _iso(notice.deadline),
        "actions": plan.step_names if notice.instance_ids else [],
        "dry_run": settings.policy.dry_run,
    }
    if notice.instance_ids:
        out["drain_deadline"] = _iso(plan.deadline)
    if isinstance(notice, notices.Ignored | notices.Malformed):
        out["reason"] = notice.reason
    if isinstance(notice, notices.SpotInterruption):
        out["instance_action"] = notice.action
    if isinstance(notice, notices.StateChange):
        out["state"] = notice.state
    if isinstance(notice, notices.ScheduledChange):
        out["status"] = notice.status
    if isinstance(notice, notices.LifecycleTerminate | notices.LifecycleLaunch):
        out["lifecycle_hook"] = {
            "auto_scaling_group": notice.hook.group_name,
            "hook": notice.hook.hook_name,
            "destination": notice.hook.destination,
        }
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spotq", description="Spot interruption handler for Kubernetes on AWS.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser(
        "run",
        help="consume interruption events from SQS and drain the nodes (queue mode)",
        description="Queue mode: consume EventBridge/Auto Scaling events from SQS, taint, cordon and drain "
        "the nodes. Configured only through environment variables:",
        epilog=_settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_parser(
        "imds",
        help="poll this node's instance metadata and drain the node on a notice (IMDS mode)",
        description="IMDS mode: poll the instance metadata service of the node this pod runs on (spot "
        "instance-action, rebalance recommendation, optionally scheduled maintenance) and taint, cordon and drain "
        "that node. Configured only through environment variables:",
        epilog=_settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    release_parser = sub.add_parser(
        "release",
        help="take spotq's taints, cordon, label and annotations off nodes that were not reclaimed after all",
        description="Undo what spotq set on the nodes (an operator's own cordon or taints stay).",
    )
    release_parser.add_argument("nodes", nargs="+", metavar="NODE", help="node name")
    audit_parser = sub.add_parser(
        "audit",
        help="read-only: what the next Spot interruption would break (exit 1 when something is at risk)",
        description="List what an interruption of the Spot nodes in spotq's scope would break: single replicas, "
        "replicas all in one pool or zone, missing or blocking PodDisruptionBudgets, grace periods longer than the "
        "window, local storage, bare pods, Spot nodes without spotq's IMDS pod, a queue consumer not ready, and "
        "(with SPOTQ_QUEUE__URL set) EventBridge rules missing, disabled or refused by the queue's policy for a kind "
        "of event spotq acts on. "
        "Exit status: 0 nothing at risk, 1 something at risk, 2 wrong setting or the cluster could not be read.",
    )
    audit_parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format (default: table)"
    )
    audit_parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        metavar="NAMESPACE",
        help="audit only this namespace's workloads and pods (repeatable; default: all); nodes and spotq's own "
        "pods are checked cluster-wide",
    )
    audit_parser.add_argument(
        "--no-stack",
        action="store_true",
        help="do not read the queue's EventBridge rules and policy (no AWS calls), even with SPOTQ_QUEUE__URL set",
    )
    explain_parser = sub.add_parser(
        "explain",
        help="classify one message body and print what would be done (no AWS, no cluster)",
        description="Read one SQS message body (file or '-' for stdin) and print its classification as JSON. "
        "Exit status: 0 classified (whatever the kind), 1 unreadable file, 2 wrong setting, "
        f"{EXIT_INTERNAL_ERROR} internal error (a bug in spotq).",
    )
    explain_parser.add_argument("file", nargs="?", default="-", help="message body file, or - for stdin")
    return parser


def _settings_table() -> str:
    lines = ["settings (environment variables):"]
    for env, default, description in settings_module.describe():
        lines.append(f"  {env}  [default: {default or '-'}]\n      {description}")
    return "\n".join(lines)
