"""One cluster-wide pod watch shared by the drains that only wait for their pods to go (ports.PodApi.follow_node's
`quiet`): it holds one connection however many nodes wait out their pods' grace, where each would hold its own.

A follower joins with the resourceVersion its node's own watch had reached. The shared watch starts from the first
follower's version and remembers the last deletions it saw (REMEMBERED), so a later follower whose version is not
older than what is remembered gets the deletions it missed replayed and nothing is lost between the two watches; a
follower further behind, or any break the watch cannot resume from (410 Gone, repeated failures), raises LostError: the
follower relists its node on its own watch and joins again. Only DELETED events are passed on: a quiet drain needs
nothing else. With no follower left the watch ends after LINGER_SECONDS (a wave's drains go quiet one after
another; one watch serves them all).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import NoReturn

from spotq.errors import ApiError, SpotqError
from spotq.kube import watching
from spotq.kube.transport import JSON, Transport
from spotq.observability import metrics
from spotq.ports import Pod

log = logging.getLogger(__name__)

REMEMBERED = 4096
LINGER_SECONDS = 30.0
# Failures in a row (not a 410) the watch resumes from before its followers are told to relist.
_RESUMES = 3

OnDeleted = Callable[[Pod], None]


class LostError(SpotqError):
    """The shared watch cannot vouch for every deletion since the follower's version: relist the node."""


def version_number(version: str) -> int | None:
    """A resourceVersion as the number it is on every API server backed by etcd (None when it is not one): only
    what is compared to decide whether a follower is covered, never sent back altered."""
    try:
        return int(version)
    except ValueError:
        return None


class SharedDeletions:
    def __init__(self, client: Transport, *, backoff: watching.Backoff, linger_seconds: float = LINGER_SECONDS) -> None:
        self._client = client
        self._backoff = backoff
        self._linger = linger_seconds
        self._followers: dict[str, list[OnDeleted]] = {}  # node name → its followers
        self._recent: collections.deque[tuple[int, str]] = collections.deque()  # (version, node), oldest first
        self._recent_on: dict[str, collections.deque[tuple[int, Pod]]] = {}  # node → its pods' deletions
        self._covered_from = 0  # every deletion after this version is in _recent or still to come
        self._position = 0
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def follow(self, node: str, since: int, on_deleted: OnDeleted) -> NoReturn:
        """Pass the deletions of `node`'s pods after version `since` to `on_deleted` until cancelled; raises LostError
        when that cannot be vouched for (the caller relists and joins again)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if not self.running:
            self._start(since)
        elif since < self._covered_from:
            metrics.WATCH_RESTARTS.labels(resource="pods_deleted", reason="behind").inc()
            raise LostError(f"{node}: its view ({since}) is older than the shared watch's ({self._covered_from})")
        assert self._lost is not None
        lost = self._lost
        self._followers.setdefault(node, []).append(on_deleted)
        try:
            for version, pod in list(self._recent_on.get(node, ())):
                if version > since:
                    on_deleted(pod)
            await asyncio.shield(lost)
            raise LostError("the shared pod watch broke off")
        finally:
            followers = self._followers.get(node, [])
            if on_deleted in followers:
                followers.remove(on_deleted)
            if not followers:
                self._followers.pop(node, None)
            if not self._followers and self.running:
                self._idle = asyncio.get_running_loop().call_later(self._linger, self._stop)

    def _start(self, since: int) -> None:
        self._recent.clear()
        self._recent_on.clear()
        self._covered_from = self._position = since
        self._lost = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def _stop(self) -> None:
        self._idle = None
        if self._task is not None and not self._followers:
            self._task.cancel()

    async def _watch(self) -> None:
        failures = 0
        try:
            while True:
                query = {
                    "resourceVersion": str(self._position),
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(watching.WATCH_TIMEOUT_SECONDS),
                }
                progressed = False
                try:
                    stream = self._client.watch("/api/v1/pods", query, operation="watch_pods_deleted")
                    async with contextlib.aclosing(stream) as events:
                        async for event in events:
                            self._take(event)
                            failures, progressed = 0, True
                    if not progressed:  # not even a bookmark: a proxy that ends every watch at once
                        failures += 1  # must not make us spin
                except ApiError as exc:
                    if exc.status == 410:
                        raise
                    failures += 1
                except SpotqError:
                    failures += 1
                if failures >= _RESUMES:
                    raise LostError("the shared pod watch failed repeatedly")
                if failures:
                    await self._backoff.pause(failures)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = "expired" if isinstance(exc, ApiError) and exc.status == 410 else "failed"
            metrics.WATCH_RESTARTS.labels(resource="pods_deleted", reason=reason).inc()
            log.warning(
                "shared pod watch lost; waiting drains relist their nodes",
                extra={"error": str(exc)[:200], "followers": len(self._followers)},
            )
        finally:
            if self._lost is not None and not self._lost.done():
                self._lost.set_result(None)

    def _take(self, event: JSON) -> None:
        kind, obj = watching.decoded(event)
        meta = obj.get("metadata") or {}
        version = version_number(str(meta.get("resourceVersion", "")))
        if version is None:
            return
        self._position = max(self._position, version)
        if kind != "DELETED":
            return
        node = str((obj.get("spec") or {}).get("nodeName") or "")
        pod = Pod(str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta.get("uid", "")))
        self._remember(version, node, pod)
        for on_deleted in list(self._followers.get(node, [])):
            on_deleted(pod)

    def _remember(self, version: int, node: str, pod: Pod) -> None:
        if len(self._recent) >= REMEMBERED:
            oldest, where = self._recent.popleft()
            self._covered_from = oldest
            on_node = self._recent_on[where]
            on_node.popleft()
            if not on_node:
                del self._recent_on[where]
        self._recent.append((version, node))
        self._recent_on.setdefault(node, collections.deque()).append((version, pod))
