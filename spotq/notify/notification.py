"""What one notification says: a node Event as an operator's chat or pager sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# A drain that timed out names every pod that blocked it; a chat message has its limits (Teams ~28 KB a card).
MESSAGE_LIMIT = 3000


@dataclass(frozen=True)
class Notification:
    node: str
    instance_id: str | None
    reason: str
    """The Kubernetes Event's reason: InterruptionNotice, DrainFinished, DrainTimedOut, DrainBlocked, ..."""
    message: str
    warning: bool
    time: datetime
    cluster: str = ""

    def fields(self) -> dict[str, str]:
        """Every value a template may name, as text."""
        message = self.message if len(self.message) <= MESSAGE_LIMIT else self.message[: MESSAGE_LIMIT - 1] + "…"
        title = f"{'⚠ ' if self.warning else ''}{self.reason}: node {self.node}" + (
            f" in {self.cluster}" if self.cluster else ""
        )
        return {
            "cluster": self.cluster,
            "node": self.node,
            "instance_id": self.instance_id or "",
            "reason": self.reason,
            "message": message,
            "warning": "true" if self.warning else "false",
            "type": "Warning" if self.warning else "Normal",
            "time": self.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "title": title,
            "text": f"{title} ({self.instance_id or 'no instance id'}): {message}",
        }


FIELD_NAMES = tuple(Notification("n", None, "r", "m", False, datetime(2000, 1, 1)).fields())
