"""Composition root of queue mode: open the clients, wire the stages, run them in one TaskGroup, stop in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from spotq import acting, handling, planning, resuming, selectors
from spotq.acknowledging import Acknowledger
from spotq.aws import session
from spotq.aws.autoscaling import Lifecycle
from spotq.aws.ec2 import InstanceLookup
from spotq.aws.sqs import Queue
from spotq.budgets import Budgets
from spotq.dispatching import Dispatcher
from spotq.draining import DrainOptions
from spotq.errors import ConfigError
from spotq.kube.client import KubeClient
from spotq.kube.events import EventRecorder
from spotq.kube.marks import NodeMarker
from spotq.kube.nodes import NodeIndex
from spotq.kube.pdbs import watch_budgets
from spotq.kube.pods import PodClient
from spotq.observability import probes
from spotq.ports import LifecycleApi
from spotq.resolving import Resolver
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
        settle_seconds=drain.settle_seconds,
        retry_initial_seconds=drain.retry_initial_seconds,
        retry_max_seconds=drain.retry_max_seconds,
        protected=protected,
    )


@dataclass
class Core:
    """What every mode shares: one Kubernetes client, the node index, the actor, the policy."""

    kube: KubeClient
    index: NodeIndex
    actor: acting.Actor
    policy: planning.Policy
    budgets: Budgets = field(default_factory=Budgets)
    """Fed by `kube.pdbs.watch_budgets(kube, budgets)`; until that runs, evictions retry PDB refusals on a timer."""


async def open_core(stack: AsyncExitStack, settings: Settings, lifecycle: LifecycleApi | None) -> Core:
    selector = selectors.parse(settings.kube.node_selector)
    # Each drain holds one pod watch; ordinary requests (at most max_in_flight) and the index watches beside them.
    connections = settings.drain.max_concurrent_nodes + settings.kube.max_in_flight + 8
    kube = await KubeClient.connect(settings.kube, max_connections=connections)
    stack.push_async_callback(kube.close)
    index = NodeIndex(selector, settings.kube.taint_prefix)
    budgets = Budgets()
    actor = acting.Actor(
        writer=NodeMarker(kube, settings.kube.taint_prefix),
        pods=PodClient(kube),
        events=EventRecorder(kube),
        lifecycle=lifecycle,
        index=index,
        config=acting.ActorConfig(
            prefix=settings.kube.taint_prefix,
            drain=drain_options(settings),
            heartbeat_seconds=settings.drain.lifecycle_heartbeat_seconds,
        ),
        drain_slots=DeadlineSlots(settings.drain.max_concurrent_nodes),
        evictions=asyncio.Semaphore(settings.drain.max_concurrent_evictions),
        budgets=budgets,
    )
    return Core(kube, index, actor, planning.Policy.from_settings(settings), budgets)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)


async def serve_probes(stack: AsyncExitStack, settings: Settings, ready: probes.ReadyCheck) -> int:
    runner, port = await probes.serve(probes.make_app(ready), settings.server.address, settings.server.port)
    stack.push_async_callback(runner.cleanup)
    return port


async def run_queue_mode(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the process exit code."""
    assert settings.queue.url is not None
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    async with AsyncExitStack() as stack:
        sqs = await session.open_client(stack, "sqs", settings.aws)
        ec2 = session.LazyClient(stack, "ec2", settings.aws)
        autoscaling = session.LazyClient(stack, "autoscaling", settings.aws)
        core = await open_core(stack, settings, Lifecycle(autoscaling))
        queue = Queue(sqs, settings.queue.url)
        await _check_queue(sqs, settings.queue.url)
        lookup = InstanceLookup(ec2)
        handler = handling.Handler(
            resolver=Resolver(core.index, lookup, settings.kube.instance_tag),
            actor=core.actor,
            policy=core.policy,
            unknown_instance_fate=settings.queue.unknown_instance_fate,
            dry_run=settings.policy.dry_run,
        )
        dispatcher = Dispatcher(
            queue,
            handler.handle,
            settings.queue,
            stop_grace_seconds=settings.queue.stop_grace_seconds,
            acknowledger=Acknowledger(queue, settings.queue),
        )

        async def ready() -> tuple[bool, str]:
            if not core.index.synced.is_set():
                return False, "node index not synced"
            return await dispatcher.ready()

        port = await serve_probes(stack, settings, ready)
        log.info(
            "spotq started",
            extra={"mode": "queue", "queue": settings.queue.url, "port": port, "dry_run": settings.policy.dry_run},
        )
        if on_listening is not None:
            on_listening(port)
        async with asyncio.TaskGroup() as group:
            background = [
                group.create_task(core.index.run(core.kube)),
                group.create_task(watch_budgets(core.kube, core.budgets)),
                group.create_task(lookup.run()),
            ]
            if not settings.policy.dry_run:
                background.append(
                    group.create_task(resuming.resume_unfinished(core.index, core.actor, settings.kube.taint_prefix))
                )
            await dispatcher.run(stop)
            for task in background:
                task.cancel()
        log.info("spotq stopped")
    return 0


async def _check_queue(sqs: object, url: str) -> None:
    """A queue that does not exist is a wrong setting: fail at start. Network trouble is only logged."""
    try:
        await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])  # type: ignore[attr-defined]
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if "NonExistentQueue" in code or code == "QueueDoesNotExist":
            raise ConfigError(f"invalid setting SPOTQ_QUEUE__URL: no such queue: {url}") from None
        log.warning("queue check failed", extra={"error": str(exc)[:200]})
    except BotoCoreError as exc:
        log.warning("queue not reachable yet", extra={"error": str(exc)[:200]})
