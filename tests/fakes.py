"""Small in-memory stand-ins for the edges, for fast unit tests. Integration tests use the real things."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NoReturn

from spotq.draining import Pod
from spotq.errors import ApiError


@dataclass
class FakePods:
    """Pods on nodes with PodDisruptionBudgets, answering like the API server's eviction subresource."""

    pods: dict[str, tuple[str, Pod, str]] = field(default_factory=dict)  # uid → (node, pod, budget group)
    budgets: dict[str, int] = field(default_factory=dict)  # group → disruptions allowed now
    recover_seconds: float = 0.05  # a replacement becomes Ready and gives the budget back
    delete_delay_seconds: float = 0.01  # how long an evicted pod takes to go (its grace, shortened)
    retry_after: float | None = None
    forced_status: dict[str, ApiError] = field(default_factory=dict)  # pod name → error returned on evict
    calls: list[tuple[str, str, int | None]] = field(default_factory=list)  # (verb, pod, grace)
    call_times: list[float] = field(default_factory=list)  # loop time of each evict call
    delete_times: list[float] = field(default_factory=list)  # loop time of each delete call
    recreate: set[str] = field(default_factory=set)  # pod names a controller puts back (new UID) once deleted
    _watchers: dict[str, list[asyncio.Queue[tuple[str, Pod]]]] = field(default_factory=dict)

    def add(self, node: str, name: str, group: str = "", **fields: object) -> Pod:
        pod = replace(Pod(namespace="ns", name=name, uid=f"uid-{name}", controller_kind="ReplicaSet"), **fields)  # type: ignore[arg-type]
        self.pods[pod.uid] = (node, pod, group)
        return pod

    def arrive(self, node: str, name: str, group: str = "", **fields: object) -> Pod:
        """A pod bound to `node` while a drain runs: added, and announced on the node's watches."""
        pod = self.add(node, name, group, **fields)
        self._emit(node, "ADDED", pod)
        return pod

    async def follow_node(
        self,
        node: str,
        on_list: Callable[[list[Pod]], None],
        on_event: Callable[[str, Pod], None],
        quiet: asyncio.Event | None = None,
    ) -> NoReturn:
        """Like watch-list: the node's pods, then every change, from one call (a "list" in `calls`)."""
        queue: asyncio.Queue[tuple[str, Pod]] = asyncio.Queue()
        self._watchers.setdefault(node, []).append(queue)  # registered before the list: nothing is missed
        try:
            self.calls.append(("list", node, None))
            on_list([pod for n, pod, _ in self.pods.values() if n == node])
            while True:
                on_event(*await queue.get())
        finally:
            self._watchers[node].remove(queue)

    async def evict(self, pod: Pod, grace_seconds: int | None) -> None:
        self.calls.append(("evict", pod.name, grace_seconds))
        self.call_times.append(asyncio.get_running_loop().time())
        if pod.name in self.forced_status:
            raise self.forced_status[pod.name]
        if pod.uid not in self.pods:
            raise ApiError(404, "Not Found")
        _, current, group = self.pods[pod.uid]
        if group and not current.finished:
            if self.budgets.get(group, 0) <= 0:
                raise ApiError(
                    429,
                    "Too Many Requests",
                    "Cannot evict pod as it would violate the pod's disruption budget. "
                    f"The disruption budget {group} needs 1 healthy pods and has 1 currently",
                    self.retry_after,
                )
            self.budgets[group] -= 1
            asyncio.get_running_loop().call_later(self.recover_seconds, self._recover, group)
        self._schedule_delete(pod)

    async def delete(self, pod: Pod, grace_seconds: int | None) -> None:
        self.calls.append(("delete", pod.name, grace_seconds))
        self.delete_times.append(asyncio.get_running_loop().time())
        if pod.uid not in self.pods:
            raise ApiError(404, "Not Found")
        self._schedule_delete(pod)

    def _recover(self, group: str) -> None:
        self.budgets[group] = self.budgets.get(group, 0) + 1

    def _schedule_delete(self, pod: Pod) -> None:
        asyncio.get_running_loop().call_later(self.delete_delay_seconds, self._deleted, pod.uid)

    def _deleted(self, uid: str) -> None:
        entry = self.pods.pop(uid, None)
        if entry is None:
            return
        node, pod, group = entry
        self._emit(node, "DELETED", pod)
        if pod.name in self.recreate:
            self.recreate.discard(pod.name)
            self._emit(node, "ADDED", self.add(node, pod.name, group, uid=f"{pod.uid}-again"))

    def _emit(self, node: str, event_type: str, pod: Pod) -> None:
        for queue in self._watchers.get(node, []):
            queue.put_nowait((event_type, pod))

    def evictions_of(self, name: str) -> list[int | None]:
        return [grace for verb, pod, grace in self.calls if verb == "evict" and pod == name]


@dataclass
class FakeQueue:
    """An SQS-like queue: receive hands out visible messages with fresh receipt handles.

    Knobs for the queue's bad days: deletes that fail or take time, receives that fail or whose answer is held
    back (SQS has already handed the messages out), a reachability check that hangs.
    """

    bodies: list[tuple[str, str]] = field(default_factory=list)  # (message id, body) still in the queue
    receipts: dict[str, str] = field(default_factory=dict)  # receipt → message id
    deleted: list[str] = field(default_factory=list)  # message ids
    deleted_receipts: list[str] = field(default_factory=list)
    visibility: list[tuple[str, int]] = field(default_factory=list)  # (message id, seconds)
    receive_sizes: list[int] = field(default_factory=list)
    fail_deletes: int = 0  # this many delete calls fail (every receipt comes back as failed)
    delete_calls: int = 0
    delete_latency_seconds: float = 0.0
    delete_started: asyncio.Event = field(default_factory=asyncio.Event)
    fail_receives: bool = False
    hold_answers: bool = False  # receive takes its messages, then waits for `answer` before returning them
    receiving: asyncio.Event = field(default_factory=asyncio.Event)  # a receive call is under way
    answer: asyncio.Event = field(default_factory=asyncio.Event)
    reachable_hangs: bool = False
    _counter: int = 0

    def put(self, message_id: str, body: str) -> None:
        self.bodies.append((message_id, body))

    async def receive(self, max_messages: int, wait_seconds: int, visibility_seconds: int) -> list:  # type: ignore[type-arg]
        from spotq.errors import TransientError
        from spotq.notices import Delivery

        self.receive_sizes.append(max_messages)
        self.receiving.set()
        if self.fail_receives:
            await asyncio.sleep(0.01)
            raise TransientError("receive_message: connection refused")
        if not self.bodies and not self.hold_answers:
            await asyncio.sleep(0.01)
            return []
        batch, self.bodies = self.bodies[:max_messages], self.bodies[max_messages:]
        out = []
        for message_id, body in batch:
            self._counter += 1
            receipt = f"r{self._counter}-{message_id}"
            self.receipts[receipt] = message_id
            out.append(Delivery(message_id, body, receipt))
        if self.hold_answers:
            await self.answer.wait()
        return out

    async def delete(self, receipts: list[str]) -> list[str]:
        self.delete_calls += 1
        self.delete_started.set()
        if self.delete_latency_seconds:
            await asyncio.sleep(self.delete_latency_seconds)
        if self.fail_deletes > 0:
            self.fail_deletes -= 1
            return list(receipts)
        self.deleted.extend(self.receipts[r] for r in receipts)
        self.deleted_receipts.extend(receipts)
        return []

    async def change_visibility(self, receipts: list[str], seconds: int) -> list[str]:
        self.visibility.extend((self.receipts[r], seconds) for r in receipts)
        return []

    async def reachable(self) -> bool:
        if self.reachable_hangs:
            await asyncio.Event().wait()
        return True
