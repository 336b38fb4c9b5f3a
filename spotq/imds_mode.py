"""IMDS mode (`spotq imds`): a pod on each Spot node polls that node's instance metadata and acts on its own node.

poll IMDS → typed notice (the kinds queue mode uses, source "imds") → planning.plan → Actor.act, once per notice.
Parsing the metadata documents is pure (spotq.parsing_imds); the Watcher owns the polling loop and what was already
acted on; `run_imds_mode` wires both to the core every mode shares (app.open_core).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import aiohttp
from prometheus_client import Counter, Gauge

from spotq import app, clock, notices, parsing, planning, plans, resuming
from spotq.aws.imds import ImdsClient, ImdsConfig, ImdsError
from spotq.draining import DrainReport
from spotq.errors import PermanentError, TransientError
from spotq.notices import InstanceId, Notice
from spotq.observability import logs, metrics
from spotq.parsing_imds import (  # the names tests and callers use: imds_mode.parse_*
    parse_instance_action,
    parse_rebalance,
    parse_scheduled_maintenance,
)
from spotq.ports import NodeRef
from spotq.settings import Settings

log = logs.get("spotq.imds")

INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
SCHEDULED_MAINTENANCE_PATH = "/latest/meta-data/events/maintenance/scheduled"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"

# While IMDS keeps failing, repeat the warning this often rather than on every poll.
_FAILURE_LOG_EVERY_SECONDS = 60.0

POLLS = Counter(
    "spotq_imds_polls",
    "IMDS reads by path (instance_action, rebalance, scheduled_maintenance; instance_id once at start) and "
    "result: notice, none (404), ok (instance_id), malformed, or why the read failed (timeout, unreachable, "
    "token_timeout, token_refused, unauthorized, http_error).",
    ["path", "result"],
    registry=metrics.REGISTRY,
)
NOTICES = Counter(
    "spotq_imds_notices",
    "Notices found on IMDS, by kind; the same notice polled again is not counted again.",
    ["kind"],
    registry=metrics.REGISTRY,
)
REACHABLE = Gauge(
    "spotq_imds_reachable", "1 while the latest IMDS poll was answered, 0 while it fails.", registry=metrics.REGISTRY
)


# -- What makes a notice the same one -----------------------------------------------------------------------------


def identity(notice: Notice) -> str:
    """What makes a notice the same one when polled again.

    An instance is interrupted once and recommended for rebalance once, so those are one notice per instance
    whatever their timestamps say (a re-stamped `time` must not restart anything); maintenance events have ids,
    and one that ends (completed, canceled) is a new notice: its marks come off.
    """
    if isinstance(notice, notices.ScheduledChange):
        phase = "ended" if notice.cancelled_or_closed else "open"
        return f"{notice.kind.value}/{notice.event_id}/{phase}"
    return notice.kind.value


@dataclass(frozen=True)
class Watch:
    """One polled path: `name` is its metric label."""

    name: str
    path: str
    parse: Callable[[str, InstanceId | None], list[Notice]]


def watches(scheduled_maintenance: bool) -> tuple[Watch, ...]:
    # The interruption first: it is the one with a two-minute clock.
    found = [
        Watch("instance_action", INSTANCE_ACTION_PATH, parse_instance_action),
        Watch("rebalance", REBALANCE_PATH, parse_rebalance),
    ]
    if scheduled_maintenance:
        found.append(Watch("scheduled_maintenance", SCHEDULED_MAINTENANCE_PATH, parse_scheduled_maintenance))
    return tuple(found)


# -- Polling and acting once --------------------------------------------------------------------------------------


class Metadata(Protocol):
    async def get(self, path: str) -> str | None: ...


class Nodes(Protocol):
    @property
    def synced(self) -> asyncio.Event: ...

    def by_name(self, name: str) -> NodeRef | None: ...


class Acting(Protocol):
    async def act(
        self, plan: plans.Plan, notice: Notice, node: NodeRef | None, received_loop_time: float, log: logs.Context
    ) -> DrainReport | None: ...


@dataclass
class _Handled:
    """A notice seen on IMDS: the first sighting fixes its receipt time (and so a rebalance's drain deadline)."""

    notice: Notice
    received_at: datetime
    received_loop_time: float
    status: Literal["acting", "done", "retry"] = "acting"
    node_missing_logged: bool = False


class Watcher:
    """Polls the watched paths every interval and acts on each new notice once, in its own task.

    A notice whose acting failed transiently (API server unreachable, node not registered yet) is tried again at
    the next poll; one acted on is never restarted, however often IMDS serves it.
    """

    def __init__(
        self,
        *,
        imds: Metadata,
        nodes: Nodes,
        actor: Acting,
        policy: planning.Policy,
        node_name: str,
        interval_seconds: float,
        stale_after_seconds: float,
        scheduled_maintenance: bool = False,
        dry_run: bool = False,
    ) -> None:
        self._imds = imds
        self._nodes = nodes
        self._actor = actor
        self._policy = policy
        self._node_name = node_name
        self._interval = interval_seconds
        self._stale_after = stale_after_seconds
        self._watches = watches(scheduled_maintenance)
        self._dry_run = dry_run
        self._handled: dict[str, _Handled] = {}
        self._malformed_logged: set[tuple[str, str]] = set()
        self._instance_id: InstanceId | None = None
        self._instance_checked = False
        self._mismatch_logged = False
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self._failing_since: float | None = None
        self._failures = 0
        self._last_warned = 0.0

    @property
    def instance_id(self) -> InstanceId | None:
        return self._instance_id

    def reachable(self) -> bool:
        """IMDS answered within the staleness window (one failed poll does not make the pod unready)."""
        if self.last_ok is None:
            return False
        return asyncio.get_running_loop().time() - self.last_ok <= self._stale_after

    def handled(self) -> dict[str, str]:
        """identity → status, for tests and debugging."""
        return {key: entry.status for key, entry in self._handled.items()}

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        running: set[asyncio.Task[None]] = set()
        async with asyncio.TaskGroup() as group:
            while not stop.is_set():
                started = loop.time()
                for key, entry in self._accept(await self.poll()):
                    task = group.create_task(self._handle(key, entry))
                    running.add(task)
                    task.add_done_callback(running.discard)
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as the
                # stop event fires, and this loop would poll on.
                with suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, self._interval - (loop.time() - started))):
                        await stop.wait()
            if running:
                # The pod is going away; a restarted one will find the notice on IMDS again and resume.
                log.info("stopping: abandoning running work", extra={"tasks": len(running)})
            for task in list(running):
                task.cancel()

    async def poll(self) -> list[Notice]:
        """One round over the watched paths: the notices IMDS serves now (valid ones only)."""
        found: list[Notice] = []
        try:
            if not self._instance_checked:
                await self._check_instance()
            for watch in self._watches:
                body = await self._read(watch)
                if body is None:
                    continue
                for notice in watch.parse(body, self._instance_id):
                    if isinstance(notice, notices.Malformed):
                        POLLS.labels(path=watch.name, result="malformed").inc()
                        self._log_malformed(watch, notice, body)
                    else:
                        POLLS.labels(path=watch.name, result="notice").inc()
                        found.append(notice)
        except ImdsError as exc:
            # IMDS is down or refusing: the remaining paths would fail the same way.
            self._failed(exc)
            return found
        self._answered()
        return found

    async def _read(self, watch: Watch) -> str | None:
        try:
            body = await self._imds.get(watch.path)
        except ImdsError as exc:
            POLLS.labels(path=watch.name, result=exc.reason).inc()
            raise
        if body is None:
            POLLS.labels(path=watch.name, result="none").inc()
        elif watch.name == "instance_id":
            POLLS.labels(path=watch.name, result="ok").inc()
        return body

    async def _check_instance(self) -> None:
        """Once: which instance this is, for logs and a cross-check with the node's providerID."""
        body = await self._read(Watch("instance_id", INSTANCE_ID_PATH, lambda _body, _id: []))
        self._instance_checked = True
        value = (body or "").strip()
        if parsing.is_instance_id(value):
            self._instance_id = InstanceId(value)

    def _accept(self, found: list[Notice]) -> list[tuple[str, _Handled]]:
        """New notices (and ones due for another try) to act on now."""
        start: list[tuple[str, _Handled]] = []
        for notice in found:
            key = identity(notice)
            entry = self._handled.get(key)
            if entry is None:
                entry = _Handled(notice, clock.now(), asyncio.get_running_loop().time())
                self._handled[key] = entry
                NOTICES.labels(kind=notice.kind.value).inc()
                log.info(
                    "notice received",
                    extra={
                        "kind": notice.kind.value,
                        "notice_id": notice.event_id,
                        "node": self._node_name,
                        "instance": self._instance_id,
                        "deadline": notice.deadline.isoformat() if notice.deadline else None,
                    },
                )
            elif entry.status != "retry":
                continue
            entry.status = "acting"
            start.append((key, entry))
        return start

    async def _handle(self, key: str, entry: _Handled) -> None:
        """Act on one notice; a bug in spotq's own code is logged and the notice kept for the next poll, as queue
        mode keeps the message: the pod stays up for the notices still to come."""
        context = log.bind(kind=entry.notice.kind.value, notice_id=entry.notice.event_id, node=self._node_name)
        try:
            await self._handle_once(entry, context)
        except Exception:
            context.exception("notice handling failed; trying again at the next poll")
            entry.status = "retry"

    async def _handle_once(self, entry: _Handled, context: logs.Context) -> None:
        notice = entry.notice
        await self._nodes.synced.wait()
        node = self._nodes.by_name(self._node_name)
        if node is None:
            if not entry.node_missing_logged:
                context.warning("node not in the cluster (yet): trying again at the next poll")
                entry.node_missing_logged = True
            entry.status = "retry"
            return
        self._check_same_instance(node, context)
        if not node.in_scope:
            context.info("node out of scope (SPOTQ_KUBE__NODE_SELECTOR): not acted on")
            entry.status = "done"
            return
        plan = planning.plan(notice, self._policy, entry.received_at)
        if not plan.steps:
            context.info("no action for this notice")
        elif self._dry_run:
            context.info("dry run: would act", extra={"steps": plan.step_names})
        else:
            try:
                await self._actor.act(plan, notice, node, entry.received_loop_time, context)
            except TransientError as exc:
                context.warning("acting failed: trying again at the next poll", extra={"error": str(exc)[:300]})
                entry.status = "retry"
                return
            except PermanentError as exc:
                context.warning("notice failed for good", extra={"error": str(exc)[:300]})
        entry.status = "done"

    def _check_same_instance(self, node: NodeRef, context: logs.Context) -> None:
        if self._mismatch_logged or not (self._instance_id and node.instance_id):
            return
        if node.instance_id != self._instance_id:
            self._mismatch_logged = True
            context.warning(
                "node's providerID names another instance than IMDS: check NODE_NAME",
                extra={"imds_instance": self._instance_id, "node_instance": node.instance_id},
            )

    def _log_malformed(self, watch: Watch, notice: notices.Malformed, body: str) -> None:
        """Once per path and reason: IMDS serves the same document on every poll."""
        if (watch.name, notice.reason) in self._malformed_logged:
            return
        self._malformed_logged.add((watch.name, notice.reason))
        reason = notice.reason
        log.warning("malformed imds document", extra={"path": watch.path, "reason": reason, "body": body[:200]})

    def _answered(self) -> None:
        now = asyncio.get_running_loop().time()
        REACHABLE.set(1)
        if self.last_ok is None:
            log.info("imds answering", extra={"instance": self._instance_id, "node": self._node_name})
        elif self._failing_since is not None:
            log.info(
                "imds answering again",
                extra={"failures": self._failures, "seconds": round(now - self._failing_since, 1)},
            )
        self.last_ok = now
        self.last_error = None
        self._failing_since = None
        self._failures = 0

    def _failed(self, exc: ImdsError) -> None:
        now = asyncio.get_running_loop().time()
        REACHABLE.set(0)
        self.last_error = str(exc)
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
            self._last_warned = now
            log.warning("imds poll failed", extra={"reason": exc.reason, "error": str(exc)})
        elif now - self._last_warned >= _FAILURE_LOG_EVERY_SECONDS:
            self._last_warned = now
            log.warning(
                "imds still failing",
                extra={
                    "reason": exc.reason,
                    "failures": self._failures,
                    "seconds": round(now - self._failing_since, 1),
                    "error": str(exc),
                },
            )


# -- Composition --------------------------------------------------------------------------------------------------


def node_name(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """SPOTQ_IMDS__NODE_NAME, else NODE_NAME (the downward API's spec.nodeName)."""
    return settings.imds.node_name or environ.get("NODE_NAME") or None


def imds_config(settings: Settings) -> ImdsConfig:
    imds = settings.imds
    return ImdsConfig(
        endpoint=imds.endpoint,
        token_ttl_seconds=imds.token_ttl_seconds,
        request_timeout_seconds=imds.request_timeout_seconds,
        retries=imds.retries,
        imdsv1_fallback=imds.imdsv1_fallback,
    )


def stale_after_seconds(settings: Settings) -> float:
    """How long IMDS may fail before the pod is unready: three polls, each with its token and read retried."""
    imds = settings.imds
    return 3 * imds.poll_interval_seconds + 2 * (imds.retries + 1) * imds.request_timeout_seconds


async def run_imds_mode(
    settings: Settings,
    node: str,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the process exit code."""
    stop = stop or asyncio.Event()
    app.stop_on_signals(stop)
    async with AsyncExitStack() as stack:
        core = await app.open_core(stack, settings, None)
        # Never through a proxy (IMDS is link-local), and a handful of connections is plenty.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4), trust_env=False)
        stack.push_async_callback(session.close)
        watcher = Watcher(
            imds=ImdsClient(session, imds_config(settings)),
            nodes=core.index,
            actor=core.actor,
            policy=core.policy,
            node_name=node,
            interval_seconds=settings.imds.poll_interval_seconds,
            stale_after_seconds=stale_after_seconds(settings),
            scheduled_maintenance=settings.imds.watch_scheduled_maintenance,
            dry_run=settings.policy.dry_run,
        )

        async def ready() -> tuple[bool, str]:
            if not core.index.synced.is_set():
                return False, "node index not synced"
            if core.index.by_name(node) is None:
                return False, f"node {node} not in the cluster"
            if not watcher.reachable():
                return False, f"imds not reachable: {watcher.last_error or 'no answer yet'}"
            return True, "ok"

        port = await app.serve_probes(stack, settings, ready)
        log.info(
            "spotq started",
            extra={
                "mode": "imds",
                "node": node,
                "endpoint": settings.imds.endpoint,
                "poll_interval_seconds": settings.imds.poll_interval_seconds,
                "port": port,
                "dry_run": settings.policy.dry_run,
            },
        )
        if on_listening is not None:
            on_listening(port)
        async with asyncio.TaskGroup() as group:
            # One node's pod needs one node in its index: a DaemonSet of 1000 must not watch 1000 nodes each.
            background = [group.create_task(core.index.run(core.kube, field_selector=f"metadata.name={node}"))]
            if not settings.policy.dry_run:
                prefix = settings.kube.taint_prefix
                background.append(group.create_task(resuming.resume_unfinished(core.index, core.actor, prefix)))
            await watcher.run(stop)
            for task in background:
                task.cancel()
        log.info("spotq stopped")
    return 0
