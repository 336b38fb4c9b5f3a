"""Typed steps a plan is made of. Acting runs them in order; each is idempotent on the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from spotq.notices import LifecycleHook

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


@dataclass(frozen=True)
class Announce:
    """A Kubernetes Event on the node saying a notice arrived."""

    name = "event"


@dataclass(frozen=True)
class Taint:
    key: str
    effect: TaintEffect
    name = "taint"


@dataclass(frozen=True)
class Cordon:
    name = "cordon"


@dataclass(frozen=True)
class ExcludeFromLoadBalancers:
    """The well-known label that makes cloud load balancers drain the node's connections."""

    label: str = "node.kubernetes.io/exclude-from-external-load-balancers"
    name = "exclude_from_load_balancers"


@dataclass(frozen=True)
class Drain:
    name = "drain"


@dataclass(frozen=True)
class CompleteLifecycle:
    """CompleteLifecycleAction CONTINUE; for launch hooks only once the node is Ready."""

    hook: LifecycleHook
    when_node_ready: bool = False
    name = "complete_lifecycle"


@dataclass(frozen=True)
class Release:
    """Take spotq's marks off the node if it carries them for this notice only: what it announced is off (a
    cancelled or closed scheduled change)."""

    name = "release"


@dataclass(frozen=True)
class OutOfService:
    """After a complete drain, the well-known taint that lets the attach/detach controller detach the node's
    volumes at once (the instance is going away for good)."""

    key: str = "node.kubernetes.io/out-of-service"
    value: str = "nodeshutdown"
    name = "out_of_service"


@dataclass(frozen=True)
class ReleaseOnReturn:
    """A stopped or hibernated instance is back (pending or running at `returned_at`): take spotq's marks off its
    node where every notice on record meant a stop and came before that (planning.returned_from_stop)."""

    returned_at: datetime
    name = "release_on_return"


Step = (
    Announce
    | Taint
    | Cordon
    | ExcludeFromLoadBalancers
    | Drain
    | OutOfService
    | CompleteLifecycle
    | Release
    | ReleaseOnReturn
)

# Steps that change the node: the message may be deleted only once these are durably written.
MARKING_STEPS = (Taint, Cordon, ExcludeFromLoadBalancers)


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    deadline: datetime
    """When the work must be finished: the notice's deadline less the margin, or receipt + the drain timeout."""

    @property
    def marks_node(self) -> bool:
        return any(isinstance(step, MARKING_STEPS) for step in self.steps)

    @property
    def drains(self) -> bool:
        return any(isinstance(step, Drain) for step in self.steps)

    @property
    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]

    def find(self, kind: type[Step]) -> Step | None:
        return next((step for step in self.steps if isinstance(step, kind)), None)
