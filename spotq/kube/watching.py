"""One list+watch loop for every in-memory mirror of the cluster (the node index, the PDB budgets, a drain's pods).

List (pages of 500, continue tokens), then watch from the list's resourceVersion with bookmarks; a watch the server
ends is resumed from the last version seen. Where asked (WatchList) and the server streams a watch's initial state
(sendInitialEvents), one request gives both: the state as the watch's first events, then the watch from there.
Any interruption relists: an expired version (410 Gone) at once, anything else — a 403 from an API server whose
RBAC cache is cold, a 500, a cut connection, a line that is not JSON — after a jittered, capped back-off. The loop
never returns; the mirror keeps its data logic in two callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import spotq.backoff
from spotq.errors import ApiError, SpotqError
from spotq.kube.transport import JSON, Transport, WatchStreamError
from spotq.observability import metrics

log = logging.getLogger(__name__)

PAGE_SIZE = 500
# The server ends each watch after this long (and we resume it): it bounds how long a silently lost
# connection can go unnoticed, and the client's read timeout is derived from it.
WATCH_TIMEOUT_SECONDS = 300
_DENIED = frozenset({401, 403})


@dataclass(frozen=True)
class Resource:
    """What to mirror: `name` names the operations (list_<name>, watch_<name>) and labels the restart metric."""

    name: str
    path: str
    scope: Mapping[str, str] = field(default_factory=dict)
    """Extra list and watch parameters, e.g. {"fieldSelector": "metadata.name=n1"}."""
    hint: str = ""
    """Said once, with the first 401/403: what RBAC the watch needs."""


@dataclass(frozen=True)
class Backoff:
    """The one back-off of the watch loops: doubling from `initial_seconds`, capped, jittered so that many spotq
    replicas (or a DaemonSet's pods) relisting after one API server restart do not arrive in step. Denied
    requests (401/403) wait longer: RBAC is fixed by people or a warming cache, not in a second."""

    initial_seconds: float = 1.0
    max_seconds: float = 30.0
    denied_max_seconds: float = 60.0

    def seconds(self, failures: int, *, denied: bool = False) -> float:
        """The wait after the `failures`-th failure in a row: between half and all of min(cap, initial * 2^(n-1))."""
        cap = self.denied_max_seconds if denied else self.max_seconds
        return spotq.backoff.Backoff(self.initial_seconds, cap, jitter=0.5).seconds(failures)

    async def pause(self, failures: int, *, denied: bool = False, answering: asyncio.Event | None = None) -> None:
        """Wait out the back-off; with `answering` (the client's: set while the API server answers) cleared, stop
        waiting as soon as it is set again, after a jitter of up to a second so that many watches do not relist in
        step: a watch comes back with the server, not up to a back-off later."""
        seconds = self.seconds(failures, denied=denied)
        if answering is None or denied or answering.is_set():
            await asyncio.sleep(seconds)
            return
        try:
            async with asyncio.timeout(seconds):
                await answering.wait()
        except TimeoutError:
            return
        await asyncio.sleep(random.uniform(0.0, min(1.0, seconds)))


DEFAULT_BACKOFF = Backoff()


@dataclass
class WatchList:
    """Ask for the list as a watch's initial events (sendInitialEvents; Kubernetes 1.34+, or the WatchList gate):
    one request instead of a list and a watch. A server that refuses it is remembered here and listed instead."""

    supported: bool = True


# A server without watch-list (WatchList gate off, as on 1.33, or before 1.27) rejects sendInitialEvents. A 403
# counts only when it is about that parameter: one from RBAC (a cold cache after a restart) is a denial, retried.
_WATCH_LIST_REFUSED = frozenset({400, 422})


def _refuses_watch_list(exc: ApiError) -> bool:
    return exc.status in _WATCH_LIST_REFUSED or (exc.status == 403 and "sendInitialEvents" in exc.body)


_INITIAL_EVENTS_END = "k8s.io/initial-events-end"

OnList = Callable[[AsyncIterator[JSON]], Awaitable[None]]
OnEvent = Callable[[str, JSON], Awaitable[None]]


async def list_and_watch(
    transport: Transport,
    resource: Resource,
    *,
    on_list: OnList,
    on_event: OnEvent,
    on_lost: Callable[[], None] | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    watch_list: WatchList | None = None,
    on_version: Callable[[str], None] | None = None,
) -> NoReturn:
    """Mirror `resource` forever. `on_list` gets every item of a full list (consume it to the end; it may raise
    from a later page); `on_event` gets ADDED / MODIFIED / DELETED with the object; `on_lost` is called whenever
    the mirror stops being current (before the pause and relist). With `watch_list`, each list is the initial
    state of a watch that then goes on, where the server allows it. `on_version` gets the resourceVersion the
    mirror is at whenever it moves (after a list, after each event it was told of, at each bookmark)."""
    failures = 0
    told_denied = False
    while True:
        try:
            version, live = await _open(transport, resource, on_list, watch_list)
            if on_version is not None:
                on_version(version)
            if failures:
                log.info("watch resumed", extra={"resource": resource.name})
            while True:
                progressed = False
                stream = live if live is not None else _watch(transport, resource, version)
                live = None
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        kind, obj = decoded(event)
                        version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                        failures, progressed = 0, True
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            await on_event(kind, obj)
                        if on_version is not None:
                            on_version(version)
                if not progressed:  # not even a bookmark: resume, but a proxy that ends every watch at once
                    failures += 1  # must not make us spin
                    await backoff.pause(failures)
        except Exception as exc:
            failures += 1
            reason = _reason(exc)
            metrics.WATCH_RESTARTS.labels(resource=resource.name, reason=reason).inc()
            if on_lost is not None:
                on_lost()
            if reason == "expired" and failures == 1:
                log.info("watch expired, relisting", extra={"resource": resource.name})
                continue
            denied = reason == "forbidden"
            fields: dict[str, Any] = {"resource": resource.name, "reason": reason, "error": str(exc)[:200]}
            if denied and not told_denied:
                told_denied = True
                log.warning("watch denied, retrying", extra={**fields, "hint": resource.hint})
            elif isinstance(exc, SpotqError):
                log.log(logging.DEBUG if denied else logging.WARNING, "watch interrupted, relisting", extra=fields)
            else:
                log.error("watch failed unexpectedly, relisting", extra=fields, exc_info=exc)
            await backoff.pause(failures, denied=denied, answering=_answering(transport))


def _answering(transport: Transport) -> asyncio.Event | None:
    """The client's answering event (KubeClient has one; a bare transport or a fake may not)."""
    answering = getattr(transport, "answering", None)
    return answering if isinstance(answering, asyncio.Event) else None


async def _list(transport: Transport, resource: Resource, on_list: OnList) -> str:
    version = ""

    async def items() -> AsyncIterator[JSON]:
        nonlocal version
        query: dict[str, str] = {"limit": str(PAGE_SIZE), **resource.scope}
        while True:
            page = await transport.request("GET", resource.path, query=query, operation=f"list_{resource.name}")
            for item in page.get("items") or []:
                yield item
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                version = str(meta.get("resourceVersion", ""))
                return
            query = {"limit": str(PAGE_SIZE), "continue": token, **resource.scope}

    await on_list(items())
    return version


async def _open(
    transport: Transport, resource: Resource, on_list: OnList, watch_list: WatchList | None
) -> tuple[str, AsyncGenerator[JSON, None] | None]:
    """A full list into `on_list`: the version it is at and, if it came as a watch's initial state, that watch."""
    if watch_list is not None and watch_list.supported:
        query = {
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS),
            **resource.scope,
        }
        stream = transport.watch(resource.path, query, operation=f"watch_list_{resource.name}")
        try:
            initial = await _initial_state(stream)
        except ApiError as exc:
            await stream.aclose()
            if not _refuses_watch_list(exc):
                raise
            watch_list.supported = False
            log.info(
                "the API server refuses watch-list; listing instead",
                extra={"resource": resource.name, "status": exc.status},
            )
        except BaseException:
            await stream.aclose()
            raise
        else:
            if initial is not None:
                version, items = initial
                try:
                    await on_list(_iterate(items))
                except BaseException:
                    await stream.aclose()
                    raise
                return version, stream
            await stream.aclose()  # ended before the initial state was complete: list instead
    return await _list(transport, resource, on_list), None


async def _initial_state(stream: AsyncGenerator[JSON, None]) -> tuple[str, list[JSON]] | None:
    """The objects a watch-list stream sends up to its initial-events-end bookmark, and that bookmark's version;
    None if the stream ends before it."""
    items: list[JSON] = []
    async for event in stream:
        kind, obj = decoded(event)
        if kind == "ADDED":
            items.append(obj)
        elif kind == "BOOKMARK":
            meta = obj.get("metadata") or {}
            if (meta.get("annotations") or {}).get(_INITIAL_EVENTS_END) == "true":
                return str(meta.get("resourceVersion", "")), items
    return None


async def _iterate(items: list[JSON]) -> AsyncIterator[JSON]:
    for item in items:
        yield item


def _watch(transport: Transport, resource: Resource, version: str) -> AsyncGenerator[JSON, None]:
    """One watch from `version` until the server ends it."""
    query = {"resourceVersion": version, "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS), **resource.scope}
    return transport.watch(resource.path, query, operation=f"watch_{resource.name}")


def decoded(event: JSON) -> tuple[str, JSON]:
    """A watch event as (type, object); an ERROR event raises ApiError."""
    kind = str(event.get("type"))
    obj: JSON = event.get("object") or {}
    if kind == "ERROR":
        raise ApiError(int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", "")))
    return kind, obj


def _reason(exc: Exception) -> str:
    """A bounded label for the restart metric."""
    if isinstance(exc, ApiError):
        if exc.status == 410:
            return "expired"
        return "forbidden" if exc.status in _DENIED else "api_error"
    if isinstance(exc, WatchStreamError):
        return "stream"
    if isinstance(exc, SpotqError):
        return "network"
    return "unexpected"
