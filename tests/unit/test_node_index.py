"""The node index over the list+watch loop: its scope, what a relist forgets, and serving through broken watches."""

from __future__ import annotations

import asyncio
from typing import Any

from spotq import selectors
from spotq.errors import TransientError
from spotq.kube.nodes import NodeIndex
from spotq.kube.transport import WatchStreamError
from spotq.notices import InstanceId
from tests.unit.fake_transport import HOLD, FakeTransport
from tests.unit.test_watching import RecordingBackoff

JSON = dict[str, Any]


def node(name: str, instance: str, version: str = "1") -> JSON:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version},
        "spec": {"providerID": f"aws:///us-east-1a/{instance}"},
    }


def page(*nodes: JSON, version: str = "10") -> JSON:
    return {"metadata": {"resourceVersion": version}, "items": list(nodes)}


async def test_the_index_keeps_answering_through_a_broken_watch_and_a_relist_forgets_deleted_nodes() -> None:
    transport = FakeTransport(
        answers={"list_nodes": [page(node("a", "i-0a"), node("b", "i-0b")), page(node("a", "i-0a"), version="20")]},
        streams={
            "watch_nodes": [
                [{"type": "ADDED", "object": node("c", "i-0c", "11")}, WatchStreamError("watch_nodes: not JSON")],
                [{"type": "MODIFIED", "object": node("a", "i-0a", "21")}, HOLD],
            ]
        },
    )
    index = NodeIndex(selectors.parse(""))
    backoff = RecordingBackoff(hold_after=0)
    run = asyncio.create_task(index.run(transport, backoff=backoff))
    try:
        await backoff.held.wait()
        # Between the broken watch and the relist, lookups answer from what was last seen.
        assert index.synced.is_set() and {n for n in "abc" if index.by_name(n)} == {"a", "b", "c"}
        backoff.release.set()
        await index.wait_for(lambda: (ref := index.by_name("a")) is not None and ref.resource_version == "21")
        assert index.lookup(InstanceId("i-0a")) is not None
        assert index.by_name("b") is None and index.lookup(InstanceId("i-0c")) is None  # gone by the relist
        assert not run.done()
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_field_selector_scopes_the_list_and_every_watch() -> None:
    transport = FakeTransport(
        answers={"list_nodes": [page(node("n1", "i-01")), page(node("n1", "i-01"))]},
        streams={"watch_nodes": [[TransientError("watch_nodes: reset")], [HOLD]]},
    )
    index = NodeIndex(selectors.parse(""))
    run = asyncio.create_task(index.run(transport, "metadata.name=n1", backoff=RecordingBackoff()))
    try:
        await transport.wait_for_calls("watch_nodes", 2)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert [c.query.get("fieldSelector") for c in transport.calls] == ["metadata.name=n1"] * 4
