"""The PodDisruptionBudget watch never gives up: a 403 (an API server whose RBAC cache is still cold) is retried at a
slower cadence, and Budgets gates evictions only while the watch is current."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from spotq.budgets import Budgets
from spotq.errors import ApiError, TransientError
from spotq.kube import watching
from spotq.kube.pdbs import watch_budgets
from spotq.observability import metrics
from tests.unit.fake_transport import HOLD, FakeTransport
from tests.unit.test_watching import RecordingBackoff

JSON = dict[str, Any]


def pdb(name: str, allowed: int, version: str = "1") -> JSON:
    return {
        "metadata": {"namespace": "app", "name": name, "generation": 1, "resourceVersion": version},
        "spec": {"selector": {"matchLabels": {"app": name}}},
        "status": {"disruptionsAllowed": allowed, "observedGeneration": 1},
    }


def page(*items: JSON, version: str = "10") -> JSON:
    return {"metadata": {"resourceVersion": version}, "items": list(items)}


def forbidden() -> ApiError:
    return ApiError(403, "Forbidden", 'poddisruptionbudgets.policy is forbidden: User "system:serviceaccount:x"')


def restarts(reason: str) -> float:
    labels = {"resource": "pdbs", "reason": reason}
    return metrics.REGISTRY.get_sample_value("spotq_watch_restarts_total", labels) or 0.0


async def test_a_403_does_not_end_the_pdb_watch() -> None:
    transport = FakeTransport(answers={"list_pdbs": [forbidden(), page(pdb("web", 1))]})
    budgets = Budgets()
    run = asyncio.create_task(watch_budgets(transport, budgets))
    watching_again = asyncio.create_task(transport.wait_for_calls("watch_pdbs", 1))
    try:
        done, _ = await asyncio.wait([run, watching_again], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert run not in done, "the PDB watch gave up after one 403"
        assert budgets.active and budgets.covering("app", {"app": "web"}) == ("app", "web")
    finally:
        run.cancel()
        watching_again.cancel()
        await asyncio.gather(run, watching_again, return_exceptions=True)


async def test_403s_are_retried_at_a_slower_cadence_with_one_rbac_hint(caplog: pytest.LogCaptureFixture) -> None:
    lists: list[JSON | BaseException] = [forbidden() for _ in range(9)]
    transport = FakeTransport(answers={"list_pdbs": [*lists, page(pdb("web", 1))]})
    budgets = Budgets()
    backoff = RecordingBackoff()
    before = restarts("forbidden")
    with caplog.at_level(logging.INFO, logger="spotq.kube"):
        run = asyncio.create_task(watch_budgets(transport, budgets, backoff=backoff))
        try:
            await transport.wait_for_calls("watch_pdbs", 1)
            assert budgets.active
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    assert restarts("forbidden") - before == 9
    assert [denied for _, denied in backoff.pauses] == [True] * 9
    fulls = [1, 2, 4, 8, 16, 32, 60, 60, 60]  # slower than other failures (capped at 30 s): RBAC takes a while
    assert watching.Backoff().denied_max_seconds == 60
    for (seconds, _), full in zip(backoff.pauses, fulls, strict=True):
        assert full / 2 <= seconds <= full
    hints = [r for r in caplog.records if "hint" in r.__dict__]
    assert len(hints) == 1 and "poddisruptionbudgets" in hints[0].__dict__["hint"]


async def test_budgets_stop_gating_while_the_watch_is_broken_and_resume_after_a_relist() -> None:
    transport = FakeTransport(
        answers={
            "list_pdbs": [page(pdb("web", 0)), TransientError("list_pdbs: connection reset"), page(pdb("web", 1))]
        },
        streams={"watch_pdbs": [[TransientError("watch_pdbs: connection reset")]]},
    )
    budgets = Budgets()
    backoff = RecordingBackoff(hold_after=1)  # the second pause holds: look at the budgets while not watching
    run = asyncio.create_task(watch_budgets(transport, budgets, backoff=backoff))
    try:
        await transport.wait_for_calls("list_pdbs", 2)
        await backoff.held.wait()
        assert not budgets.active  # evictions go straight to the API server, draining retries 429s meanwhile
        backoff.release.set()
        await transport.wait_for_calls("watch_pdbs", 2)
        assert budgets.active
        assert budgets.covering("app", {"app": "web"}) == ("app", "web")
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_an_expired_watch_relists_at_once() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    transport = FakeTransport(
        answers={"list_pdbs": [page(pdb("web", 0)), page(pdb("web", 1), version="11")]},
        streams={"watch_pdbs": [[gone], [HOLD]]},
    )
    budgets = Budgets()
    backoff = RecordingBackoff()
    before = restarts("expired")
    run = asyncio.create_task(watch_budgets(transport, budgets, backoff=backoff))
    try:
        await transport.wait_for_calls("watch_pdbs", 2)
        assert backoff.pauses == []  # an expired resourceVersion is routine: relist without waiting
        watches = [call.query for call in transport.calls if call.operation == "watch_pdbs"]
        assert [q["resourceVersion"] for q in watches] == ["10", "11"]
        assert restarts("expired") - before == 1
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
