"""The IMDS source: poll this node's instance metadata, dedupe notices by identity, hand each new one to handling.

poll IMDS → typed notice (parsing_imds; the kinds queue mode uses, source "imds") → handling.Handler, once per
notice; the queue source is dispatching. Acknowledging a notice is a no-op: IMDS serves it until it ends, so a
notice whose handling failed transiently is simply tried again at the next poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from spotq import clock, notices, parsing
from spotq.acknowledging import Outcome
from spotq.errors import ImdsError
from spotq.notices import InstanceId, Notice
from spotq.observability import logs, metrics
from spotq.parsing_imds import (
    parse_instance_action,
    parse_rebalance,
    parse_scheduled_maintenance,
    parse_target_lifecycle_state,
)
from spotq.ports import NodeRef

log = logs.get("spotq.imds")

INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
SCHEDULED_MAINTENANCE_PATH = "/latest/meta-data/events/maintenance/scheduled"
TARGET_LIFECYCLE_STATE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"

# While IMDS keeps failing, repeat the warning this often rather than on every poll.
_FAILURE_LOG_EVERY_SECONDS = 60.0

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


def watches(scheduled_maintenance: bool, target_lifecycle_state: bool = False) -> tuple[Watch, ...]:
    # The interruption first: it is the one with a two-minute clock; then a termination by the Auto Scaling group.
    found = [Watch("instance_action", INSTANCE_ACTION_PATH, parse_instance_action)]
    if target_lifecycle_state:
        found.append(Watch("target_lifecycle_state", TARGET_LIFECYCLE_STATE_PATH, parse_target_lifecycle_state))
    found.append(Watch("rebalance", REBALANCE_PATH, parse_rebalance))
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


class NoticeHandler(Protocol):
    async def handle_notice(
        self, notice: Notice, received: clock.Instant, context: logs.Context | None = None
    ) -> Outcome: ...


# The handler's outcomes that mean "not yet": the node has not registered, or acting failed transiently.
_TRY_AGAIN = frozenset({Outcome.TRANSIENT, Outcome.UNKNOWN_INSTANCE})


@dataclass
class _Handled:
    """A notice seen on IMDS: the first sighting fixes its receipt time (and so a rebalance's drain deadline)."""

    notice: Notice
    received: clock.Instant
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
        handler: NoticeHandler,
        node_name: str,
        interval_seconds: float,
        stale_after_seconds: float,
        scheduled_maintenance: bool = False,
        target_lifecycle_state: bool = False,
    ) -> None:
        self._imds = imds
        self._nodes = nodes
        self._handler = handler
        self._node_name = node_name
        self._interval = interval_seconds
        self._stale_after = stale_after_seconds
        self._watches = watches(scheduled_maintenance, target_lifecycle_state)
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
                        metrics.IMDS_POLLS.labels(path=watch.name, result="malformed").inc()
                        self._log_malformed(watch, notice, body)
                    else:
                        metrics.IMDS_POLLS.labels(path=watch.name, result="notice").inc()
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
            metrics.IMDS_POLLS.labels(path=watch.name, result=exc.reason).inc()
            raise
        if body is None:
            metrics.IMDS_POLLS.labels(path=watch.name, result="none").inc()
        elif watch.name == "instance_id":
            metrics.IMDS_POLLS.labels(path=watch.name, result="ok").inc()
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
                entry = _Handled(notice, clock.instant())
                self._handled[key] = entry
                metrics.IMDS_NOTICES.labels(kind=notice.kind.value).inc()
                log.debug(
                    "imds notice found",  # the handler logs "notice received" with the same fields
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
        notice = entry.notice
        context = log.bind(
            kind=notice.kind.value,
            notice_id=notice.event_id,
            node=self._node_name,
            instance=self._instance_id,
            deadline=notice.deadline.isoformat() if notice.deadline else None,
        )
        try:
            await self._handle_once(entry, context)
        except Exception:
            context.exception("notice handling failed; trying again at the next poll")
            entry.status = "retry"

    async def _handle_once(self, entry: _Handled, context: logs.Context) -> None:
        await self._nodes.synced.wait()
        node = self._nodes.by_name(self._node_name)
        if node is not None:
            self._check_same_instance(node, context)
        notice = entry.notice
        if not notice.instance_ids:
            # IMDS did not say which instance this is; the notice is about this node all the same (OwnNode).
            notice = replace(notice, instance_ids=(node.instance_id if node and node.instance_id else InstanceId(""),))
        outcome = await self._handler.handle_notice(notice, entry.received, context)
        if outcome in _TRY_AGAIN:
            if node is None and not entry.node_missing_logged:
                context.warning("node not in the cluster (yet): trying again at the next poll")
                entry.node_missing_logged = True
            elif node is not None:
                context.warning("acting failed: trying again at the next poll")
            entry.status = "retry"
            return
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
        metrics.IMDS_REACHABLE.set(1)
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
        metrics.IMDS_REACHABLE.set(0)
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
