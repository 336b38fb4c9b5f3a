"""Notification bodies: each preset is valid JSON whatever the values hold; custom templates are checked at start."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from spotq.notify.notification import FIELD_NAMES, MESSAGE_LIMIT, Notification
from spotq.notify.templates import PRESETS, TemplateError, compile_template

NASTY = 'ns/web-1: "PDB" web allows 0 \\ disruptions\n\ttab </b> ünï ${node} $$ {{x}} %s'
NOTIFICATION = Notification(
    node='ip-10-0-0-1"\\',
    instance_id="i-0123456789abcdef0",
    reason="DrainTimedOut",
    message=NASTY,
    warning=True,
    time=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    cluster="prod-eu",
)


def _render(name: str, notification: Notification = NOTIFICATION) -> Any:
    return json.loads(compile_template(PRESETS[name], json_body=True, slack=name == "slack").render(notification))


def test_generic_preset_is_json_with_every_field_escaped() -> None:
    body = _render("generic")
    assert body == {
        "cluster": "prod-eu",
        "node": 'ip-10-0-0-1"\\',
        "instance_id": "i-0123456789abcdef0",
        "reason": "DrainTimedOut",
        "message": NASTY,
        "warning": True,
        "type": "Warning",
        "time": "2030-01-02T03:04:05Z",
        "source": "spotq",
    }
    normal = Notification("n", None, "DrainFinished", "evicted 3 pods", False, NOTIFICATION.time)
    assert _render("generic", normal)["warning"] is False and _render("generic", normal)["instance_id"] == ""


def test_slack_preset_is_an_incoming_webhook_text_message() -> None:
    body = _render("slack")
    assert list(body) == ["text"]
    shown = NASTY.replace("</b>", "&lt;/b&gt;")  # Slack's escaping: no value makes a link or a mention
    assert body["text"] == f'⚠ DrainTimedOut: node ip-10-0-0-1"\\ in prod-eu (i-0123456789abcdef0): {shown}'


def test_slack_text_cannot_mention_everyone_or_make_a_link() -> None:
    hostile = Notification(
        "n1", None, "DrainBlocked", "<!channel> & <https://evil.example|click>", True, NOTIFICATION.time
    )
    text = _render("slack", hostile)["text"]
    assert "<" not in text and ">" not in text
    assert text.endswith("&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;")
    assert _render("generic", hostile)["message"] == hostile.message  # only Slack's text is escaped


def test_teams_preset_is_a_message_with_one_adaptive_card() -> None:
    body = _render("teams")
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.2"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"  # $$ in the preset: a literal $
    title, message, facts = card["body"]
    assert title["text"] == '⚠ DrainTimedOut: node ip-10-0-0-1"\\ in prod-eu' and message["text"] == NASTY
    assert {f["title"]: f["value"] for f in facts["facts"]}["Instance"] == "i-0123456789abcdef0"


def test_a_long_message_is_cut_to_the_limit() -> None:
    long = Notification("n", "i-1", "DrainTimedOut", "x" * 10_000, True, NOTIFICATION.time)
    assert len(_render("generic", long)["message"]) == MESSAGE_LIMIT


def test_a_custom_json_template_names_fields_in_either_form() -> None:
    template = compile_template('{"who": "${node}", "why": "$reason", "cost": "$$5"}', json_body=True)
    assert json.loads(template.render(NOTIFICATION)) == {"who": 'ip-10-0-0-1"\\', "why": "DrainTimedOut", "cost": "$5"}


def test_a_template_that_is_not_json_is_not_escaped() -> None:
    template = compile_template("$node: $message", json_body=False)
    assert template.render(NOTIFICATION).decode() == f'ip-10-0-0-1"\\: {NASTY}'


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ('{"text": "$nodename"}', "unknown name $nodename"),
        ('{"a": "$Node", "b": "${msg}"}', "unknown names $Node, $msg"),
        ('{"text": "costs $5"}', "Invalid placeholder in string: line 1, col 17"),
        ('{"text": "${node.__class__}"}', "Invalid placeholder"),
        ('{"text": "${node[0]}"}', "Invalid placeholder"),
        ('{"node": $node}', "the body is not JSON"),
        ('{"text": "$message"', "the body is not JSON"),
    ],
    ids=["unknown", "two-unknown", "bare-dollar", "attribute", "item", "unquoted-value", "broken-json"],
)
def test_bad_templates_are_refused_with_one_line(source: str, says: str) -> None:
    with pytest.raises(TemplateError) as raised:
        compile_template(source, json_body=True)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_the_refusal_lists_the_known_names() -> None:
    with pytest.raises(TemplateError) as raised:
        compile_template("$who", json_body=False)
    assert all(f"${name}" in str(raised.value) for name in FIELD_NAMES)


def test_values_can_never_run_code_or_reach_attributes() -> None:
    # A value that looks like a placeholder or a format string stays text: substitution is one pass over the template.
    sneaky = Notification("${message}", None, "{0.__class__}", "$node", False, NOTIFICATION.time)
    body = json.loads(compile_template(PRESETS["generic"], json_body=True).render(sneaky))
    assert (body["node"], body["reason"], body["message"]) == ("${message}", "{0.__class__}", "$node")
