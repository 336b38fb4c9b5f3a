"""The composition root for both modes: open the edges, wire the stages, run one TaskGroup, stop in order.

A mode (queue_mode: SQS; imds_mode: this node's instance metadata) is a Source: it opens its own edges, hands its
notices to the one handler (handling.Handler) and says when it is ready. Everything else is shared: the Kubernetes
client, the node index, the actor (marks, drains, hooks), the PDB watch, resuming unfinished drains, the probes.
Queue-mode replicas in a pod also hold a Lease each (kube/leases.py) and claim each node's drain (owning.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from spotq import acting, expiring, handling, planning, resuming, selectors
from spotq.budgets import Budgets
from spotq.draining import DrainOptions
from spotq.kube.client import KubeClient
from spotq.kube.events import EventRecorder
from spotq.kube.leases import ReplicaLeases
from spotq.kube.marks import NodeMarker
from spotq.kube.nodes import NodeIndex
from spotq.kube.pdbs import watch_budgets
from spotq.kube.pods import PodClient
from spotq.kube.volumes import VolumeAttachmentIndex
from spotq.notify.notifier import Notifier
from spotq.observability import probes
from spotq.ports import EventSink, LifecycleApi, NodeWriter
from spotq.resolving import Resolve
from spotq.settings import Settings
from spotq.slots import DeadlineSlots

log = logging.getLogger("spotq")


def drain_options(settings: Settings) -> DrainOptions:
    kube, drain = settings.kube, settings.drain
    protected = (
        frozenset({f"{kube.pod_namespace}/{kube.pod_name}"}) if kube.pod_name and kube.pod_namespace else frozenset()
    )
    return DrainOptions(
        delete_emptydir_data=drain.delete_emptydir_data,
        evict_unmanaged_pods=drain.evict_unmanaged_pods,
        force_delete_before_deadline_seconds=drain.force_delete_before_deadline_seconds,
        complete_admitted_evictions=drain.complete_admitted_evictions,
        settle_seconds=drain.settle_seconds,
        critical_reserve_seconds=drain.critical_pods_reserve_seconds,
        retry_initial_seconds=drain.retry_initial_seconds,
        retry_max_seconds=drain.retry_max_seconds,
        protected=protected,
    )


@dataclass
class Core:
    """What every mode shares: one Kubernetes client, the node index, the actor, the policy."""

    settings: Settings
    kube: KubeClient
    index: NodeIndex
    actor: acting.Actor
    policy: planning.Policy
    budgets: Budgets = field(default_factory=Budgets)
    """Fed by `kube.pdbs.watch_budgets(kube, budgets)`; until that runs, evictions retry PDB refusals on a timer."""
    writer: NodeWriter | None = None
    events: EventSink | None = None
    """The actor's node writer and event sink, for the background work beside it (expiring)."""
    replicas: ReplicaLeases | None = None
    """Queue-mode replicas' Leases, when they coordinate (replica_identity); run and released by `run`."""
    volumes: VolumeAttachmentIndex | None = None
    """The VolumeAttachments mirror, when terminate hooks wait for volumes (SPOTQ_DRAIN__WAIT_FOR_VOLUME_DETACH)."""

    def handler(self, resolver: Resolve) -> handling.Handler:
        """The one handler, resolving instances the source's way."""
        return handling.Handler(
            resolver=resolver,
            actor=self.actor,
            policy=self.policy,
            unknown_instance_fate=self.settings.queue.unknown_instance_fate,
            dry_run=self.settings.policy.dry_run,
        )


class Source(Protocol):
    """Where notices come from. `open` runs first (its edges may give the actor a lifecycle API), `wire` once the
    core is up; `run` feeds the handler until `stop` is set, then stops in order."""

    mode: str
    index_scope: str
    """A field selector narrowing the node index ("" for every node)."""
    watch_budgets: bool

    async def open(self, stack: AsyncExitStack) -> LifecycleApi | None: ...

    def wire(self, core: Core) -> None: ...

    async def ready(self) -> tuple[bool, str]: ...

    def details(self) -> dict[str, object]: ...

    def background(self) -> list[Coroutine[Any, Any, None]]: ...

    async def run(self, stop: asyncio.Event) -> None: ...


def replica_identity(settings: Settings, mode: str) -> str | None:
    """Who this replica is to the others on its queue, or None when it coordinates with none: only queue mode in a
    pod's namespace (not IMDS mode: one pod per node acts on its own node), not a dry run (it writes nothing), not
    with SPOTQ_KUBE__REPLICA_LEASE_SECONDS=0. Its pod's name, else host name and process id."""
    kube = settings.kube
    if mode != "queue" or not kube.pod_namespace or kube.replica_lease_seconds <= 0 or settings.policy.dry_run:
        return None
    return kube.pod_name or re.sub(r"[^a-z0-9.-]+", "-", f"{socket.gethostname()}-{os.getpid()}".lower())


async def open_core(
    stack: AsyncExitStack,
    settings: Settings,
    lifecycle: LifecycleApi | None,
    *,
    identity: str | None = None,
    notifier: Notifier | None = None,
) -> Core:
    selector = selectors.parse(settings.kube.node_selector)
    # Each drain holds one pod watch; ordinary requests (at most max_in_flight) and the index watches beside them.
    connections = settings.drain.max_concurrent_nodes + settings.kube.max_in_flight + 8
    kube = await KubeClient.connect(settings.kube, max_connections=connections)
    stack.push_async_callback(kube.close)
    index = NodeIndex(selector, settings.kube.taint_prefix)
    budgets = Budgets(settings.drain.evictions_in_flight_per_budget, settings.drain.evictions_in_flight_target)
    replicas = None
    if identity is not None and settings.kube.pod_namespace:
        replicas = ReplicaLeases(
            kube,
            settings.kube.pod_namespace,
            identity,
            lease_seconds=settings.kube.replica_lease_seconds,
            prefix=settings.kube.taint_prefix,
        )
    writer = NodeMarker(kube, settings.kube.taint_prefix)
    volumes = VolumeAttachmentIndex() if settings.drain.wait_for_volume_detach else None
    # With a webhook, each Event is also offered (never awaited) as a notification: see spotq/notify.
    events: EventSink = EventRecorder(kube) if notifier is None else notifier.wrap(EventRecorder(kube))
    actor = acting.Actor(
        writer=writer,
        pods=PodClient(kube, shared_grace_watch=settings.drain.shared_grace_watch),
        events=events,
        lifecycle=lifecycle,
        index=index,
        config=acting.ActorConfig(
            prefix=settings.kube.taint_prefix,
            drain=drain_options(settings),
            heartbeat_seconds=settings.drain.lifecycle_heartbeat_seconds,
            complete_delay_seconds=settings.drain.lifecycle_complete_delay_seconds,
            evict_own_pod=settings.drain.evict_own_pod,
            release_slot_when_quiet=settings.drain.shared_grace_watch,
        ),
        drain_slots=DeadlineSlots(settings.drain.max_concurrent_nodes),
        evictions=asyncio.Semaphore(settings.drain.max_concurrent_evictions),
        budgets=budgets,
        replicas=replicas,
        pod_events=EventRecorder(kube) if settings.drain.pod_events else None,
        volumes=volumes,
    )
    policy = planning.Policy.from_settings(settings)
    return Core(
        settings, kube, index, actor, policy, budgets, writer=writer, events=events, replicas=replicas, volumes=volumes
    )


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)


async def run(
    settings: Settings,
    source: Source,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> int:
    """Run `source` until SIGTERM/SIGINT (or `stop` is set). Returns the process exit code."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    async with AsyncExitStack() as stack:
        notifier = Notifier.from_settings(settings.webhook)  # a wrong SPOTQ_WEBHOOK__* stops spotq here
        identity = replica_identity(settings, source.mode)
        core = await open_core(stack, settings, await source.open(stack), identity=identity, notifier=notifier)
        source.wire(core)
        replicas = core.replicas

        async def ready() -> tuple[bool, str]:
            if not core.index.synced.is_set():
                return False, "node index not synced"
            if replicas is not None and not replicas.held():
                return False, "replica lease not held (see the log: RBAC for leases, or the API server)"
            return await source.ready()

        runner, port = await probes.serve(probes.make_app(ready), settings.server.address, settings.server.port)
        stack.push_async_callback(runner.cleanup)
        replica = {"replica": identity} if replicas is not None else {}
        log.info(
            "spotq started",
            extra={
                "mode": source.mode,
                "port": port,
                "dry_run": settings.policy.dry_run,
                **replica,
                **source.details(),
            },
        )
        if on_listening is not None:
            on_listening(port)
        async with asyncio.TaskGroup() as group:
            work = [core.index.run(core.kube, field_selector=source.index_scope), *source.background()]
            if source.watch_budgets:
                work.append(watch_budgets(core.kube, core.budgets))
            if core.volumes is not None:
                work.append(core.volumes.run(core.kube))
            if not settings.policy.dry_run:
                work.append(resuming.resume_unfinished(core.index, core.actor, replicas))
            expiry = settings.policy.rebalance_expiry_seconds
            if expiry > 0 and not settings.policy.dry_run and core.writer and core.events:
                work.append(
                    expiring.expire_recommendations(core.index, core.writer, core.events, timedelta(seconds=expiry))
                )
            background = [group.create_task(coroutine) for coroutine in work]
            sending = group.create_task(notifier.run()) if notifier is not None else None
            # The Lease outlives every drain here: the others must not take a drain over while it still runs.
            holding = group.create_task(replicas.run()) if replicas is not None else None
            await source.run(stop)
            for task in background:
                task.cancel()
            await asyncio.wait(background)
            if replicas is not None and holding is not None:
                holding.cancel()
                await asyncio.wait([holding])
                await replicas.release()
            if notifier is not None and sending is not None:
                await notifier.finish(sending)  # the outcomes of the last drains, within a short grace
        log.info("spotq stopped")
    return 0
