"""The edges as the stages see them: the data they get back and the small Protocols they call.

Stages (resolving, handling, acting, draining, resuming, polling) depend on these only; `spotq/kube/` and
`spotq/aws/` implement them, and translate to and from the wire (JSON, annotation keys, patches) there. The
architecture contract in pyproject.toml (import-linter) keeps the stages from importing an SDK or an edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NoReturn, Protocol

from spotq.notices import InstanceId, Kind, LifecycleHook

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
DrainState = Literal["started", "finished", "timed-out", "blocked"]


@dataclass(frozen=True)
class NoticeRecord:
    """What spotq records on a node about a notice that acted on it (the first of its kind stays on record)."""

    kind: Kind
    id: str | None
    deadline: datetime | None = None
    noticed_at: datetime | None = None
    detail: str | None = None
    """What the notice said would happen, where it says: a Spot warning's action (terminate, stop, hibernate), a
    state change's state (stopping, stopped, ...); a stopped instance that returns is released on it."""


@dataclass(slots=True, frozen=True)
class NodeRef:
    """A node as the index knows it: what the stages decide on, plus the edge's own cached copy."""

    name: str
    uid: str
    instance_id: InstanceId | None
    hostname: str | None
    in_scope: bool
    ready: bool
    resource_version: str
    drain_state: DrainState | str | None = None
    """spotq's record of its drain: started, finished, timed-out or blocked; None if it never drained the node."""
    records: tuple[NoticeRecord, ...] = ()
    drainer: str | None = None
    """The replica on record as draining the node (queue mode with several replicas); None if none claimed it."""
    cached: Any = field(default=None, compare=False, repr=False)
    """Opaque to the stages: the node writer's copy, so a mark needs no GET."""

    def record(self, kind: Kind) -> NoticeRecord | None:
        return next((r for r in self.records if r.kind is kind), None)


@dataclass(frozen=True)
class NodeMarks:
    """What a notice asks to be true of a node. Taints, cordon, the label and the record are added where missing;
    the record and the drain's start are written only where absent (the first notice stays on record)."""

    taints: tuple[tuple[str, str, TaintEffect], ...] = ()  # (key, value, effect)
    cordon: bool = False
    exclude_from_load_balancers: bool = False
    record: NoticeRecord | None = None
    drain_started: bool = False
    drainer: str | None = None
    """This replica, claiming the drain in the same PATCH that records its start (only where none is on record)."""
    overrides_detail: bool = False
    """The record's detail becomes this notice's even where a notice of its kind is on record already (its id
    and times stay): a terminate warning after a stop warning means the instance does not come back."""


@dataclass(frozen=True)
class DrainRecord:
    """Who drains a node and how far it got, as one version of the node says (see owning.py)."""

    drainer: str | None = None
    state: DrainState | str | None = None

    @classmethod
    def of(cls, node: NodeRef) -> DrainRecord:
        return cls(node.drainer, node.drain_state)


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: InstanceId
    private_dns_name: str
    tags: dict[str, str]


FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    phase: str = "Running"
    grace_seconds: int = 30
    controller_kind: str | None = None
    mirror: bool = False
    uses_emptydir: bool = False
    terminating: bool = False
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs: which PDB covers the pod
    critical: bool = False
    """A system-critical pod (system-cluster-critical / system-node-critical): evicted after the ordinary ones."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES


class PodApi(Protocol):
    async def follow_node(
        self,
        node: str,
        on_list: Callable[[list[Pod]], None],
        on_event: Callable[[str, Pod], None],
        quiet: asyncio.Event | None = None,
    ) -> NoReturn:
        """Mirror the node's pods until cancelled: `on_list` gets every pod on the node, first and after every
        relist (an expired watch, an interruption); `on_event` gets ADDED / MODIFIED / DELETED and the pod. Once
        `quiet` is set the follower needs only the pods' deletions: the node's own watch may give way to one
        shared with other quiet followers (DELETED events only from then on; a relist still goes to `on_list`)."""
        ...

    async def evict(self, pod: Pod, grace_seconds: int | None) -> None: ...

    async def delete(self, pod: Pod, grace_seconds: int | None) -> None: ...


class NodeLookup(Protocol):
    """The watch-fed node index."""

    @property
    def synced(self) -> asyncio.Event: ...

    def lookup(self, instance_id: InstanceId) -> NodeRef | None: ...

    def by_name(self, name: str) -> NodeRef | None: ...

    def nodes(self) -> list[NodeRef]: ...

    async def wait_for(self, predicate: Callable[[], bool]) -> None: ...


class NodeWriter(Protocol):
    async def mark(self, node: NodeRef, marks: NodeMarks) -> tuple[bool, DrainRecord]:
        """Make `marks` true on the node; True if a write was needed, and the drain's record as it then stands."""
        ...

    async def claim_drain(self, node: NodeRef, drainer: str, may_claim: Callable[[DrainRecord], bool]) -> DrainRecord:
        """Record `drainer` as draining the node, and the drain as started, where `may_claim` holds for the node as
        it is now; written with its resourceVersion, so of two replicas claiming at once one wins (the other's
        PATCH is a 409, re-read and re-decided). Returns the drain's record as it then stands."""
        ...

    async def record_drain(self, node: NodeRef, state: DrainState) -> None: ...

    async def release_for(self, node: NodeRef, kind: Kind, notice_id: str) -> bool:
        """Take spotq's marks off a node that carries them for this one notice only; True if it wrote."""
        ...

    async def release_if(self, node: NodeRef, may_release: Callable[[tuple[NoticeRecord, ...]], bool]) -> bool:
        """Take spotq's marks off the node where `may_release` holds for the notices on record as the node is now
        (a record that does not decode counts as a notice that keeps the marks); written with its resourceVersion,
        so a notice recorded meanwhile makes it a 409, re-read and re-decided. True if it wrote."""
        ...


class Replicas(Protocol):
    """The queue-mode replicas consuming one queue, as one of them sees them through their Leases (kube/leases.py).

    Each renews its own Lease; a replica whose Lease is not renewed for its duration is gone, and the drains on
    record as its own may be taken over. Expiry is judged by when this replica saw each renewal, not by the
    holders' clocks."""

    @property
    def identity(self) -> str: ...

    def expires_at(self, holder: str) -> float | None:
        """Loop time at which `holder`'s Lease expires unless renewed before (in the past: gone); None: not known
        to expire (this replica itself, or the Leases are being listed again)."""
        ...

    @property
    def changes(self) -> int:
        """How many times a Lease has appeared, been released or deleted so far (not renewals): read it before
        looking at the Leases, and `changed` with it misses nothing that happens meanwhile."""
        ...

    async def changed(self, since: int) -> None:
        """Return once `changes` is past `since`: at once if a Lease appeared, was released or deleted since the
        caller read it, else at the next such change."""
        ...

    def holding(self) -> bool:
        """False once this replica's own Lease may look expired to the others (renewals failing)."""
        ...

    async def lost(self) -> None:
        """Return once `holding()` is False."""
        ...


class EventSink(Protocol):
    async def node_event(self, node: NodeRef, reason: str, message: str, *, warning: bool = False) -> None: ...


class PodEventSink(Protocol):
    """Events on pods (`kubectl describe pod`): why spotq moved one. Apart from EventSink, whose node Events are
    also notifications (spotq/notify): one per evicted pod would flood a webhook in a wave."""

    async def pod_event(self, pod: Pod, reason: str, message: str, *, warning: bool = False) -> None: ...


class VolumeAttachments(Protocol):
    """The nodes' attached volumes (storage.k8s.io VolumeAttachments)."""

    async def wait_detached(self, node: str) -> bool:
        """Return once no volume is attached to `node` (True), or at once when that is not known (False)."""
        ...


class LifecycleApi(Protocol):
    async def complete(self, hook: LifecycleHook) -> None: ...

    async def heartbeat(self, hook: LifecycleHook) -> None: ...


class InstanceLookup(Protocol):
    async def describe(self, instance_id: InstanceId) -> InstanceInfo | None: ...
