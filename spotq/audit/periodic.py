"""The periodic audit (queue mode, SPOTQ_AUDIT__INTERVAL_SECONDS): `spotq audit`'s checks run in the daemon and
published as metrics (spotq_audit_*), so an alert can say what the next wave would break before it comes.

Its lists go through the daemon's own client at the lowest priority, and a run never starts while a drain runs: a
wave's taints and evictions are never queued behind an audit. A check that stops finding anything drops to 0 (an
alert on it resolves); a cluster that could not be read leaves the last figures and counts a failed run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from spotq import selectors
from spotq.kube.transport import Transport
from spotq.observability import metrics
from spotq.ratelimit import Priority
from spotq.settings import AwsSettings, Settings

from . import checks, reading, stack, views
from .checks import Finding

log = logging.getLogger(__name__)

StackReader = Callable[[AwsSettings, str, tuple[stack.Route, ...]], Awaitable[stack.Stack]]

# How soon after start the first run comes (at most): after the start-up work (resuming drains) has gone out.
FIRST_RUN_SECONDS = 30.0
# How often a run waiting for the drains to finish looks again.
BUSY_POLL_SECONDS = 5.0


class Publisher:
    """Sets the audit gauges from one run's findings; label pairs seen before and absent now go to 0."""

    def __init__(self) -> None:
        self._published: set[tuple[str, str]] = set()

    def publish(self, found: Sequence[Finding], spot_nodes: int) -> None:
        counts: dict[tuple[str, str], int] = {}
        for finding in found:
            key = (finding.check, str(finding.severity))
            counts[key] = counts.get(key, 0) + 1
        for key in self._published - set(counts):
            metrics.AUDIT_FINDINGS.labels(*key).set(0)
        for key, count in counts.items():
            metrics.AUDIT_FINDINGS.labels(*key).set(count)
        self._published |= set(counts)
        metrics.AUDIT_AT_RISK.set(1 if found else 0)
        metrics.AUDIT_SPOT_NODES.set(spot_nodes)
        metrics.AUDIT_LAST_SUCCESS.set(time.time())


async def audit_once(
    kube: Transport, settings: Settings, read_stack: StackReader | None
) -> tuple[list[Finding], int] | None:
    """One run's findings and Spot node count; None when the cluster could not be read (logged)."""
    try:
        snapshot = await reading.read(kube, settings.audit.namespace_list(), priority=Priority.NOTE)
    except reading.ReadError as exc:
        log.warning("periodic audit failed: %s", exc, extra={"error": str(exc)})
        return None
    cluster = views.cluster_from(snapshot, selectors.parse(settings.kube.node_selector))
    del snapshot  # the raw lists are the bulk of a run's memory
    found = checks.run(cluster, checks.Limits.from_settings(settings))
    spot_nodes = len(cluster.spot_nodes())
    if read_stack is not None and settings.audit.stack and settings.queue.url:
        read = await read_stack(settings.aws, settings.queue.url, stack.routes(settings))
        found = checks.ordered([*found, *stack.check(read)])
    return found, spot_nodes


async def run_periodically(
    kube: Transport,
    settings: Settings,
    *,
    busy: Callable[[], bool],
    read_stack: StackReader | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Forever (cancelled at stop): wait, wait out any drain, audit, publish."""
    interval = settings.audit.interval_seconds
    publisher = Publisher()
    await sleep(min(FIRST_RUN_SECONDS, interval))
    while True:
        while busy():
            await sleep(BUSY_POLL_SECONDS)
        started = time.monotonic()
        outcome = await audit_once(kube, settings, read_stack)
        if outcome is None:
            metrics.AUDIT_RUNS.labels(result="failed").inc()
        else:
            found, spot_nodes = outcome
            publisher.publish(found, spot_nodes)
            metrics.AUDIT_RUNS.labels(result="ok").inc()
            log.info(
                "periodic audit: %d findings on %d Spot nodes",
                len(found),
                spot_nodes,
                extra={
                    "findings": len(found),
                    "spot_nodes": spot_nodes,
                    "seconds": round(time.monotonic() - started, 2),
                },
            )
        await sleep(interval)
