"""The queue-mode replicas' Leases (coordination.k8s.io/v1) in spotq's own namespace: this replica's, renewed every
fifth of its duration; everyone's, mirrored by one list+watch (kube/watching.py). ports.Replicas over them.

One Lease per replica, not per node: a wave of any size costs each replica one renewal every couple of seconds. The
nodes say who drains them (the drainer annotation, kube/marks.py); the Leases say whether that replica still lives.
A Lease is judged by when this replica saw it renewed (as client-go's leader election does), never by comparing the
holder's clock with ours, so clock skew cannot make a live replica look gone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spotq.errors import ApiError, SpotqError, TransientError
from spotq.kube import watching
from spotq.kube.transport import JSON, Transport
from spotq.ratelimit import Priority

log = logging.getLogger(__name__)

# A Lease whose holder stopped renewing it this long ago (its pod was killed: nobody deleted it) is deleted by
# whichever replica notices, so a namespace does not collect one Lease per pod ever run. Far beyond any clock skew.
STALE_SECONDS = 3600.0
# Holders remembered as gone, or first heard of without a Lease: bounded, a long-lived process sees many pods.
_REMEMBERED = 1000
_UNSAFE = re.compile(r"[^a-z0-9.-]+")


def lease_name(identity: str) -> str:
    """The Lease of replica `identity` (a pod name): a DNS subdomain name of at most 253 characters."""
    return ("spotq-replica-" + _UNSAFE.sub("-", identity.lower())).strip("-.")[:253].rstrip("-.")


def _micro_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wall(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class _Seen:
    """A Lease as this replica last saw it: a change of `renewed` is a renewal, seen at loop time `observed`."""

    name: str
    version: str
    renewed: str
    observed: float
    duration: float


class ReplicaLeases:
    """ports.Replicas: `run()` holds this replica's Lease and mirrors the others' until cancelled; `release()`
    deletes this replica's Lease on a clean stop, so the others take its drains over at once."""

    def __init__(
        self, client: Transport, namespace: str, identity: str, *, lease_seconds: float, prefix: str = "spotq.io"
    ) -> None:
        self._client = client
        self._identity = identity
        self._name = lease_name(identity)
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self._namespace = namespace
        self._label = f"{prefix}/replica"
        self._seconds = lease_seconds
        self.renew_every_seconds = max(lease_seconds / 5, 0.2)
        self._lease: JSON | None = None
        self._seen: dict[str, _Seen] = {}  # holder → its Lease
        self._gone: OrderedDict[str, None] = OrderedDict()  # holders whose Lease was deleted
        self._unknown: OrderedDict[str, float] = OrderedDict()  # holder → loop time first asked about, no Lease
        self._current = False
        self._changed = asyncio.Condition()
        self._changes = 0
        self._lost = asyncio.Event()
        self._held_once = False
        self._watchdog: asyncio.TimerHandle | None = None

    # -- ports.Replicas ------------------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self._identity

    def expires_at(self, holder: str) -> float | None:
        if holder == self._identity or not self._current:
            return None  # ourselves; or the mirror is catching up: nobody is taken over meanwhile
        seen = self._seen.get(holder)
        if seen is not None:
            return seen.observed + seen.duration
        if holder in self._gone:
            return -math.inf
        # A claim can arrive on the node watch before its holder's Lease on this one: a full Lease's grace.
        first = self._unknown.setdefault(holder, asyncio.get_running_loop().time())
        _trim(self._unknown)
        return first + self._seconds

    @property
    def changes(self) -> int:
        return self._changes

    async def changed(self, since: int) -> None:
        # A count, not a bare notification: a waiter started a loop turn after the caller looked (a task, as
        # side_tasks.first_of starts) would otherwise miss a Lease deleted in that turn and wait for its expiry.
        async with self._changed:
            await self._changed.wait_for(lambda: self._changes > since)

    def holding(self) -> bool:
        return not self._lost.is_set()

    async def lost(self) -> None:
        await self._lost.wait()

    def held(self) -> bool:
        """This replica's Lease is written and renewed in time (readiness)."""
        return self._held_once and self.holding()

    # -- holding this replica's Lease ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Renew this replica's Lease and mirror everyone's, until cancelled."""
        self._arm(asyncio.get_running_loop().time())  # until the first renewal: a Lease's grace, as others give
        resource = watching.Resource(
            "leases",
            self._path,
            {"labelSelector": self._label},
            hint=f"grant get, list, watch, create, update and delete on leases (coordination.k8s.io) in "
            f"namespace {self._namespace}",
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(self._renewing())
            group.create_task(
                watching.list_and_watch(
                    self._client, resource, on_list=self._listed, on_event=self._event, on_lost=self._stale
                )
            )

    async def release(self) -> None:
        """Delete this replica's Lease (a clean stop): waiting replicas take its drains over without waiting for it
        to expire. Its drains must have stopped first."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._lost.set()
        if self._lease is None:
            return
        try:
            await self._request("DELETE", f"{self._path}/{self._name}", "delete_lease")
            log.info("replica lease released", extra={"lease": self._name})
        except SpotqError as exc:
            log.warning("replica lease not released; it expires", extra={"error": str(exc)[:200]})

    async def _renewing(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            sent = loop.time()
            try:
                await self._renew()
                self._renewed(sent)
                if failures:
                    log.info("replica lease renewed again", extra={"lease": self._name, "failures": failures})
                failures = 0
            except SpotqError as exc:
                failures += 1
                if failures == 1:
                    log.warning(
                        "replica lease renewal failed",
                        extra={
                            "lease": self._name,
                            "error": str(exc)[:200],
                            "hint": "spotq needs get, create, update on leases in its namespace; or set "
                            "SPOTQ_KUBE__REPLICA_LEASE_SECONDS=0 for a single replica",
                        },
                    )
            else:
                try:
                    await self._collect()
                except SpotqError as exc:
                    log.debug("stale replica leases not collected", extra={"error": str(exc)[:200]})
            # Paced from the send, not the answer: after an answer that came late (an API server that stalled), the
            # next renewal goes out at once, before the late one's watchdog stops the drains again.
            await asyncio.sleep(max(0.0, sent + self.renew_every_seconds - loop.time()))

    async def _renew(self) -> None:
        """One renewal: update the Lease as last written; create it if missing; on a conflict read it again."""
        for _ in range(3):
            try:
                if self._lease is None:
                    self._lease = await self._request("POST", self._path, "create_lease", self._body(None))
                else:
                    path = f"{self._path}/{self._name}"
                    self._lease = await self._request("PUT", path, "update_lease", self._body(self._lease))
                return
            except ApiError as exc:
                if exc.status == 409:  # it exists (a create), or changed since (an update): read it
                    self._lease = await self._request("GET", f"{self._path}/{self._name}", "get_lease")
                elif exc.status == 404:
                    self._lease = None
                else:
                    raise
        raise TransientError(f"lease {self._name}: still conflicting")

    def _body(self, previous: JSON | None) -> JSON:
        now = _micro_time(datetime.now(UTC))
        spec: JSON = {
            "holderIdentity": self._identity,
            "leaseDurationSeconds": math.ceil(self._seconds),
            "renewTime": now,
        }
        if previous is None:
            return {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self._name, "labels": {self._label: "true"}},
                "spec": {**spec, "acquireTime": now},
            }
        before: JSON = previous.get("spec") or {}
        meta: JSON = previous.get("metadata") or {}
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self._name,
                "resourceVersion": meta.get("resourceVersion", ""),
                "labels": {**(meta.get("labels") or {}), self._label: "true"},
            },
            "spec": {**before, **spec, "acquireTime": before.get("acquireTime") or now},
        }

    def _renewed(self, sent: float) -> None:
        """The others see this renewal no earlier than it was sent: until a fifth of a Lease before it expires from
        there, this replica may go on draining. One answered after that moment renews nothing this replica may act
        on: drains stay stopped until a renewal comes back in time."""
        self._held_once = True
        if self._watchdog_at(sent) <= asyncio.get_running_loop().time():
            self._expire()  # as if its watchdog had fired: it would have by now
            return
        self._arm(sent)

    def _watchdog_at(self, sent: float) -> float:
        return sent + self._seconds - self.renew_every_seconds

    def _arm(self, sent: float) -> None:
        self._lost.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_at(self._watchdog_at(sent), self._expire)

    def _expire(self) -> None:
        if not self._held_once:
            # Never written (no RBAC for Leases?): nobody saw it live, so nobody waits on it. Drains go on rather
            # than none at all; readiness says what is wrong, and the renewal's warning how to fix it.
            log.error("replica lease never written: drains are not coordinated", extra={"lease": self._name})
            return
        if not self._lost.is_set():
            log.warning("replica lease not renewed in time: drains here stop", extra={"lease": self._name})
        self._lost.set()

    async def _collect(self) -> None:
        """Delete the Leases of replicas gone for STALE_SECONDS (by their holder's clock: that far off, skew is no
        question). The resourceVersion precondition spares one renewed meanwhile."""
        now = datetime.now(UTC)
        for holder, seen in list(self._seen.items()):
            renewed = _wall(seen.renewed)
            if holder == self._identity or renewed is None or (now - renewed).total_seconds() < STALE_SECONDS:
                continue
            body: JSON = {"preconditions": {"resourceVersion": seen.version}}
            try:
                await self._request("DELETE", f"{self._path}/{seen.name}", "delete_lease", body)
                log.info("stale replica lease deleted", extra={"lease": seen.name, "renewed": seen.renewed})
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise

    async def _request(self, method: str, path: str, operation: str, body: JSON | None = None) -> JSON:
        # Ahead of a wave's evictions: a renewal stuck behind them would let the others take this replica's drains.
        return await self._client.request(method, path, body=body, operation=operation, priority=Priority.MARK)

    # -- mirroring everyone's ------------------------------------------------------------------------------------

    def _see(self, lease: JSON, now: float, *, listed: bool) -> tuple[str, _Seen] | None:
        meta: JSON = lease.get("metadata") or {}
        spec: JSON = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if not isinstance(holder, str) or not holder:
            return None
        renewed = str(spec.get("renewTime") or "")
        duration = float(spec.get("leaseDurationSeconds") or self._seconds)
        before = self._seen.get(holder)
        observed = before.observed if before is not None and before.renewed == renewed else now
        if listed and (before is None or before.renewed != renewed):
            # First sight after a (re)list: renewed long before by its own clock means long gone, whatever the skew.
            when = _wall(renewed)
            age = (datetime.now(UTC) - when).total_seconds() if when is not None else 0.0
            if age > 2 * duration:
                observed = now - duration
        return holder, _Seen(
            str(meta.get("name", "")), str(meta.get("resourceVersion", "")), renewed, observed, duration
        )

    async def _listed(self, leases: AsyncIterator[JSON]) -> None:
        now = asyncio.get_running_loop().time()
        seen: dict[str, _Seen] = {}
        async for lease in leases:
            entry = self._see(lease, now, listed=True)
            if entry is not None:
                seen[entry[0]] = entry[1]
        for holder in set(self._seen) - set(seen):
            self._forget(holder)
        for holder in seen:
            self._gone.pop(holder, None)
            self._unknown.pop(holder, None)
        self._seen = seen
        self._current = True
        await self._notify()

    async def _event(self, kind: str, lease: JSON) -> None:
        holder = (lease.get("spec") or {}).get("holderIdentity")
        name = (lease.get("metadata") or {}).get("name")
        if kind == "DELETED" or not holder:
            for known, seen in list(self._seen.items()):
                if seen.name == name:
                    self._forget(known)
            await self._notify()
            return
        entry = self._see(lease, asyncio.get_running_loop().time(), listed=False)
        if entry is None:
            return
        new = entry[0] not in self._seen
        self._seen[entry[0]] = entry[1]
        self._gone.pop(entry[0], None)
        self._unknown.pop(entry[0], None)
        if new:
            await self._notify()

    def _forget(self, holder: str) -> None:
        self._seen.pop(holder, None)
        self._gone[holder] = None
        _trim(self._gone)

    def _stale(self) -> None:
        self._current = False

    async def _notify(self) -> None:
        self._changes += 1
        async with self._changed:
            self._changed.notify_all()


def _trim(memory: OrderedDict[str, Any]) -> None:
    while len(memory) > _REMEMBERED:
        memory.popitem(last=False)
