"""The notification body: a safe template, `$name` / `${name}` replaced by a notification's values.

string.Template semantics and nothing more: no expressions, no attribute or item access, no code; `$$` is a
literal `$`. Only the names in notification.FIELD_NAMES exist; any other, or a malformed placeholder, is refused
when the template is compiled (at start). When the body is JSON every value is JSON-escaped (quotes, backslashes,
control characters, non-ASCII) so that it sits inside a JSON string of the template, and the template is rendered
once with awkward sample values to prove the result parses.

Presets:
- generic: a JSON object with every field (`warning` a JSON boolean).
- slack: a Slack incoming webhook's `{"text": ...}`; `&`, `<` and `>` in the values are written as Slack asks
  (`&amp;`, `&lt;`, `&gt;`), so a value can never make a link or a mention such as `<!channel>`.
- teams: a Microsoft Teams incoming webhook's message with one Adaptive Card (1.2) attachment — the format both the
  classic Incoming Webhook connector and the Workflows "when a Teams webhook request is received" flows accept
  (the legacy MessageCard is accepted by the retiring connectors only).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from spotq.notify.notification import FIELD_NAMES, Notification

GENERIC = (
    '{"cluster": "$cluster", "node": "$node", "instance_id": "$instance_id", "reason": "$reason", '
    '"message": "$message", "warning": $warning, "type": "$type", "time": "$time", "source": "spotq"}'
)
SLACK = '{"text": "$text"}'
TEAMS = (
    '{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", '
    '"contentUrl": null, "content": {"$$schema": "http://adaptivecards.io/schemas/adaptive-card.json", '
    '"type": "AdaptiveCard", "version": "1.2", "body": ['
    '{"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true, "text": "$title"}, '
    '{"type": "TextBlock", "wrap": true, "text": "$message"}, '
    '{"type": "FactSet", "facts": [{"title": "Cluster", "value": "$cluster"}, {"title": "Node", "value": "$node"}, '
    '{"title": "Instance", "value": "$instance_id"}, {"title": "Type", "value": "$type"}, '
    '{"title": "Time", "value": "$time"}]}]}}]}'
)
PRESETS = {"generic": GENERIC, "slack": SLACK, "teams": TEAMS}

# Rendered at compile time to prove a JSON template stays JSON whatever the values hold.
_AWKWARD = Notification(
    node='n"o\\de\n',
    instance_id="i-0123456789abcdef0",
    reason="DrainTimedOut",
    message='2 pods not drained: ns/a: "quoted" \\ back\tslash </script> ünïcødé ${x}',
    warning=True,
    time=datetime(2030, 1, 1, tzinfo=UTC),
    cluster="c$$",
)


class TemplateError(ValueError):
    """A template that cannot be used: the message says why, in one line."""


def _json_escaped(value: str) -> str:
    return json.dumps(value)[1:-1]


def _slack_escaped(value: str) -> str:
    """Slack's control characters in message text (api.slack.com, "Escaping text")."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class BodyTemplate:
    source: str
    json: bool
    """Values are JSON-escaped, and the body is checked to parse as JSON."""
    slack: bool = False
    """Values are escaped for Slack message text first."""

    def render(self, notification: Notification) -> bytes:
        values = notification.fields()
        if self.slack:
            values = {name: _slack_escaped(value) for name, value in values.items()}
        if self.json:
            values = {name: _json_escaped(value) for name, value in values.items()}
        return string.Template(self.source).substitute(values).encode()


def compile_template(source: str, *, json_body: bool, slack: bool = False) -> BodyTemplate:
    """A usable template, or TemplateError naming what is wrong (an unknown name, a bad `$`, not JSON)."""
    template = string.Template(source)
    if not template.is_valid():
        try:
            template.substitute({name: "" for name in template.get_identifiers()})
        except ValueError as exc:  # "Invalid placeholder in string: line 1, col 5"
            raise TemplateError(f"{exc}; write $$ for a literal $") from None
    unknown = sorted(set(template.get_identifiers()) - set(FIELD_NAMES))
    if unknown:
        raise TemplateError(
            f"unknown name{'s' if len(unknown) > 1 else ''} {', '.join('$' + n for n in unknown)}; "
            f"known: {', '.join('$' + n for n in FIELD_NAMES)}"
        )
    compiled = BodyTemplate(source, json_body, slack)
    if json_body:
        for warning in (True, False):
            sample = compiled.render(replace(_AWKWARD, warning=warning))
            try:
                json.loads(sample)
            except ValueError as exc:
                raise TemplateError(f"the body is not JSON ({exc}); put each $name inside a JSON string") from None
    return compiled
