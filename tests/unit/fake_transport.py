"""One in-memory Kubernetes transport for the kube modules' unit tests (spotq.kube.transport.Transport).

Answers come from scripts keyed by operation ("list_nodes", "watch_pdbs", ...), the way httpx's MockTransport
answers from a handler: a request pops the next answer (a JSON body, or an exception to raise; none left: no answer ever); a watch pops the
next stream, a list of events and exceptions, yielded and raised in order. A stream ending in HOLD stays open
(a quiet watch); once a watch operation's streams are used up, further watches hold too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Final

from spotq.ratelimit import Priority

JSON = dict[str, Any]
HOLD: Final = "hold"

Answer = JSON | BaseException
Item = JSON | BaseException | str


@dataclass(frozen=True)
class Call:
    method: str
    operation: str
    query: dict[str, str]
    body: JSON | None = None


@dataclass
class FakeTransport:
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    streams: dict[str, list[list[Item]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    watches_closed: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: JSON | None = None,
        content_type: str = "application/json",
        operation: str,
        priority: Priority = Priority.WORK,
    ) -> JSON:
        await self._record(Call(method, operation, dict(query or {}), body))
        script = self.answers.get(operation)
        if not script:
            await asyncio.Event().wait()  # no answer scripted: the server never answers (tests look at `calls`)
        assert script
        answer = script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def watch(self, path: str, query: dict[str, str], *, operation: str) -> AsyncGenerator[JSON, None]:
        await self._record(Call("WATCH", operation, dict(query)))
        script = self.streams.get(operation)
        items: list[Item] = script.pop(0) if script else [HOLD]
        try:
            for item in items:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, str):
                    await asyncio.Event().wait()  # HOLD: open and quiet until cancelled
                    continue
                yield item
        finally:
            self.watches_closed += 1

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]

    async def wait_for_calls(self, operation: str, count: int, timeout: float = 5.0) -> None:
        """Until `operation` has been called `count` times (an AssertionError after `timeout` s)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.operations().count(operation) >= count)

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
