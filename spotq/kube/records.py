"""spotq's records on a node, as annotations: the first notice of each kind that acted (id, when, its deadline),
the drain's state and the replica draining it. The one place that knows their keys and JSON; the stages see
ports.NoticeRecord and ports.DrainRecord."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from spotq.notices import Kind
from spotq.ports import DrainRecord, NoticeRecord


def notice_key(prefix: str, kind: Kind) -> str:
    """The annotation holding the first notice of this kind that acted on the node."""
    return f"{prefix}/{kind.value.replace('_', '-')}"


def drain_key(prefix: str) -> str:
    return f"{prefix}/drain"


def drainer_key(prefix: str) -> str:
    """The replica that claimed the node's drain (queue mode with several replicas; see owning.py)."""
    return f"{prefix}/drainer"


def drain_record(annotations: Mapping[str, str], prefix: str) -> DrainRecord:
    return DrainRecord(annotations.get(drainer_key(prefix)), annotations.get(drain_key(prefix)))


def owner_key(prefix: str) -> str:
    """What spotq itself changed (cordon, labels): `spotq release` undoes only that."""
    return f"{prefix}/owned"


def encode(record: NoticeRecord) -> str:
    doc: dict[str, str | None] = {
        "id": record.id,
        "noticed_at": record.noticed_at.isoformat() if record.noticed_at else None,
        "deadline": record.deadline.isoformat() if record.deadline else None,
    }
    if record.detail is not None:
        doc["detail"] = record.detail
    return json.dumps(doc)


def read(annotations: Mapping[str, str], prefix: str) -> tuple[NoticeRecord, ...]:
    """Every notice record among the node's annotations (a record that does not decode is skipped)."""
    found: list[NoticeRecord] = []
    for kind in Kind:
        value = annotations.get(notice_key(prefix, kind))
        if not value:
            continue
        try:
            doc = json.loads(value)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        found.append(
            NoticeRecord(
                kind=kind,
                id=doc.get("id") if isinstance(doc.get("id"), str) else None,
                deadline=_time(doc.get("deadline")),
                noticed_at=_time(doc.get("noticed_at")),
                detail=doc.get("detail") if isinstance(doc.get("detail"), str) else None,
            )
        )
    return tuple(found)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
