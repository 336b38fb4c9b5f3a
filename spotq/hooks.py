"""The lifecycle side of a plan, around its drain: heartbeats keep a terminate hook open while it waits; before the
hook completes, the node's end is sped up (the out-of-service taint, so its volumes detach) and waited for (its
VolumeAttachments gone, the completion delay), each within the plan's deadline; a launch hook waits for its node to
be Ready."""

from __future__ import annotations

import asyncio

from spotq import plans
from spotq.errors import PermanentError
from spotq.notices import LifecycleHook
from spotq.observability import logs
from spotq.ports import LifecycleApi, NodeLookup, NodeMarks, NodeRef, NodeWriter, VolumeAttachments


async def heartbeats(lifecycle: LifecycleApi | None, hook: LifecycleHook, every: float, log: logs.Context) -> None:
    """Forever (until cancelled): a heartbeat on `hook` every `every` seconds; a failed one is logged."""
    while lifecycle is not None:
        await asyncio.sleep(every)
        try:
            await lifecycle.heartbeat(hook)
        except Exception as exc:
            log.warning("lifecycle heartbeat failed", extra={"error": str(exc)[:200]})


async def out_of_service(
    writer: NodeWriter, index: NodeLookup, node: NodeRef, step: plans.OutOfService, log: logs.Context
) -> None:
    """The out-of-service taint once the node is drained: its volumes detach without the 6-minute wait."""
    taint = NodeMarks(taints=((step.key, step.value, "NoExecute"),))
    changed, _ = await writer.mark(index.by_name(node.name) or node, taint)
    log.info("node tainted out-of-service" if changed else "node already out-of-service")


async def await_volumes(
    volumes: VolumeAttachments | None, node: NodeRef | None, plan: plans.Plan, due: float, log: logs.Context
) -> None:
    """Before a terminate hook completes: until no volume is attached to the node, within the plan's deadline."""
    if volumes is None or node is None or not plan.drains:
        return
    try:
        async with asyncio.timeout_at(due):
            known = await volumes.wait_detached(node.name)
    except TimeoutError:
        log.warning("volumes still attached at the deadline: completing the lifecycle action")
        return
    log.info("node's volumes detached" if known else "node's volume attachments unknown: not waiting")


async def delay_completion(delay: float, due: float, log: logs.Context) -> None:
    """SPOTQ_DRAIN__LIFECYCLE_COMPLETE_DELAY_SECONDS (`delay`) before a terminate hook completes, never past the
    plan's deadline."""
    if delay <= 0:
        return
    loop = asyncio.get_running_loop()
    until = min(loop.time() + delay, due)
    if until > loop.time():
        log.info("completing the lifecycle action after a delay", extra={"seconds": round(until - loop.time(), 1)})
        await asyncio.sleep(until - loop.time())


async def wait_ready(index: NodeLookup, node: NodeRef | None, due: float) -> None:
    """A launch hook completes once its node is Ready; held (message in flight) until the plan's deadline,
    which the launch wait puts shortly before the hook's own timeout."""
    name = node.name if node else None
    if name is None:
        raise PermanentError("launch hook: the new instance is not a node of this cluster")

    def ready() -> bool:
        current = index.by_name(name)
        return current is not None and current.ready

    try:
        async with asyncio.timeout_at(due):
            await index.wait_for(ready)
    except TimeoutError:
        raise PermanentError(
            f"launch hook: node {name} not Ready within SPOTQ_POLICY__LAUNCH_WAIT_SECONDS; the hook's own "
            "timeout decides"
        ) from None
