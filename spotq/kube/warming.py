"""Connections to the API server kept open and ready for the next wave.

A wave's first taints go out together, each on a connection of its own (kube.max_in_flight), and a connection
that is not open yet costs a TCP and TLS handshake, on spotq's one core and the API server's, before its PATCH is
even sent. With none open, a wave's taints waited for 128 handshakes: against a local control plane 100 node
PATCHes through spotq's client took 0.29 s on new connections and 0.17 s on open ones, and a 200-node wave's
marks p99 went from 0.75 s to 0.56 s (medians of 4 and 5 runs; bench/results/warm-connections.md). Idle
connections close (aiohttp's after transport.KEEPALIVE_SECONDS, the API server's after 90 s): every ROUND_SECONDS
this sends `connections` GET /version at once, each on a connection of its own, unless spotq's own requests since
the last round (a wave) were at least as many: they kept the connections in use. /version is the cheapest request
there is (no object, no etcd; audit policies commonly leave it out); 128 open connections cost ~15 MB of RSS.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from spotq.errors import SpotqError
from spotq.observability import logs
from spotq.ratelimit import Priority

log = logs.get("spotq.kube.warming")

# Shorter than transport.KEEPALIVE_SECONDS: a connection used in one round is still open at the next.
ROUND_SECONDS = 50.0


class Requests(Protocol):
    requests_sent: int

    async def request(self, method: str, path: str, *, operation: str, priority: Priority = ...) -> object: ...


async def warm(client: Requests, connections: int) -> int:
    """One round: `connections` requests at once, the least urgent kind; the number answered."""

    async def one() -> bool:
        try:
            await client.request("GET", "/version", operation="warm_connections", priority=Priority.NOTE)
        except SpotqError as exc:
            log.debug("warming a connection failed", extra={"error": str(exc)[:200]})
            return False
        return True

    answered = await asyncio.gather(*(one() for _ in range(connections)))
    return sum(answered)


async def keep_warm(client: Requests, connections: int, *, round_seconds: float = ROUND_SECONDS) -> None:
    """Keep `connections` connections open until cancelled: a round at once, then one every `round_seconds`
    unless spotq's own traffic since the last round was enough."""
    if connections <= 0:
        return
    failing = False
    seen = client.requests_sent
    while True:
        if client.requests_sent - seen < connections:
            answered = await warm(client, connections)
            if answered < connections and not failing:
                log.info(
                    "could not keep every API server connection open (the next round tries again)",
                    extra={"answered": answered, "connections": connections},
                )
            failing = answered < connections
        seen = client.requests_sent
        await asyncio.sleep(round_seconds)
