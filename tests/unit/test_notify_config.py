"""SPOTQ_WEBHOOK__*: checked at start; a wrong setting stops spotq with one line naming it and never the URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spotq.errors import ConfigError
from spotq.notify import config
from spotq.notify.notification import Notification
from spotq.settings import WebhookSettings

from .test_cli import Cli

SECRET_URL = "https://hooks.example.com/services/T000/B000/s3cr3tT0ken"


def _load(**fields: object) -> config.WebhookConfig | None:
    return config.load(WebhookSettings(**fields))  # type: ignore[arg-type]


def _refusal(**fields: object) -> str:
    with pytest.raises(ConfigError) as raised:
        _load(**fields)
    text = str(raised.value)
    assert "\n" not in text
    return text


def test_no_url_means_no_webhook() -> None:
    assert _load() is None
    assert _load(template="slack", headers='{"X-A": "b"}') is None


def test_the_url_from_a_file_is_read_at_start_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text(SECRET_URL + "\n")  # a Secret's key often ends in a newline
    loaded = _load(url_file=str(secret))
    assert loaded is not None and loaded.url == SECRET_URL
    assert loaded.host == "hooks.example.com"
    assert SECRET_URL not in repr(loaded) and "s3cr3t" not in repr(loaded)


def test_presets_and_settings_reach_the_configuration() -> None:
    loaded = _load(
        url=SECRET_URL,
        template="teams",
        headers='{"X-Team": "ops", "Authorization": "Bearer t"}',
        proxy="http://user:pw@proxy.internal:3128",
        reasons="InterruptionNotice, DrainTimedOut",
        cluster_name="prod",
        queue_size=7,
        retries=0,
    )
    assert loaded is not None
    assert loaded.template_name == "teams" and loaded.template.json
    assert loaded.headers == {"X-Team": "ops", "Authorization": "Bearer t"}
    assert loaded.proxy_host == "proxy.internal" and "pw" not in repr(loaded)
    assert loaded.reasons == frozenset({"InterruptionNotice", "DrainTimedOut"})
    assert (loaded.cluster, loaded.queue_size, loaded.retries) == ("prod", 7, 0)


def test_a_custom_template_from_a_file(tmp_path: Path) -> None:
    template = tmp_path / "body.json"
    template.write_text('{"summary": "$title", "at": "$time"}')
    loaded = _load(url=SECRET_URL, template_file=str(template))
    assert loaded is not None and loaded.template_name == "custom"
    notice = Notification("n1", "i-1", "InterruptionNotice", "m", False, datetime(2030, 1, 1, tzinfo=UTC))
    assert json.loads(loaded.template.render(notice)) == {
        "summary": "InterruptionNotice: node n1",
        "at": "2030-01-01T00:00:00Z",
    }


def test_a_text_content_type_turns_json_escaping_off_for_custom_templates_only() -> None:
    headers = '{"content-type": "text/plain; charset=utf-8"}'
    custom = _load(url=SECRET_URL, headers=headers, template="$node lost: $message")
    assert custom is not None and not custom.template.json
    preset = _load(url=SECRET_URL, headers=headers, template="slack")
    assert preset is not None and preset.template.json


@pytest.mark.parametrize(
    ("fields", "setting", "says"),
    [
        ({"url": "ftp://hooks.example.com/s3cr3tT0ken"}, "URL", "not an http:// or https:// URL"),
        ({"url": "https:///s3cr3tT0ken"}, "URL", "with a host"),
        ({"url": "https://hooks.example.com:port/s3cr3tT0ken"}, "URL", "not a valid URL"),
        ({"url": SECRET_URL, "url_file": "/x"}, "URL_FILE", "not both"),
        ({"url": SECRET_URL, "headers": "{X-A: b}"}, "HEADERS", "not JSON"),
        ({"url": SECRET_URL, "headers": '["X-A"]'}, "HEADERS", "JSON object of strings"),
        ({"url": SECRET_URL, "headers": '{"X-A": 1}'}, "HEADERS", "JSON object of strings"),
        ({"url": SECRET_URL, "headers": '{"X A": "b"}'}, "HEADERS", "not a header name"),
        ({"url": SECRET_URL, "headers": '{"X-A": "b\\r\\nX-Evil: 1"}'}, "HEADERS", "line break"),
        ({"url": SECRET_URL, "proxy": "socks5://proxy:1080"}, "PROXY", "not an http:// or https:// proxy URL"),
        ({"url": SECRET_URL, "template": "slak"}, "TEMPLATE", "unknown preset 'slak'; presets: generic, slack, teams"),
        ({"url": SECRET_URL, "template": '{"t": "$nod"}'}, "TEMPLATE", "unknown name $nod"),
        ({"url": SECRET_URL, "template": '{"t": $node}'}, "TEMPLATE", "not JSON"),
        ({"url": SECRET_URL, "reasons": "DrainFinished,Drained"}, "REASONS", "unknown reason Drained; known:"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.isupper() else None,
)
def test_wrong_settings_are_refused_naming_them_and_never_the_url(
    fields: dict[str, object], setting: str, says: str
) -> None:
    text = _refusal(**fields)
    assert text.startswith(f"invalid setting SPOTQ_WEBHOOK__{setting}: "), text
    assert says in text
    assert "s3cr3t" not in text


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    text = _refusal(url_file=str(tmp_path / "missing"))
    assert (
        text
        == f"invalid setting SPOTQ_WEBHOOK__URL_FILE: cannot read {tmp_path / 'missing'}: No such file or directory"
    )
    bad = tmp_path / "url"
    bad.write_text("not a url s3cr3t")
    assert "s3cr3t" not in _refusal(url_file=str(bad))
    text = _refusal(url=SECRET_URL, template_file=str(tmp_path / "nope.json"))
    assert text.startswith("invalid setting SPOTQ_WEBHOOK__TEMPLATE_FILE: cannot read")
    broken = tmp_path / "broken.json"
    broken.write_text('{"x": "$oops"}')
    assert _refusal(url=SECRET_URL, template_file=str(broken)).startswith(
        "invalid setting SPOTQ_WEBHOOK__TEMPLATE_FILE: unknown name $oops"
    )


@pytest.mark.parametrize("command", ["run", "imds"])
def test_spotq_stops_at_start_with_one_line(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spotq = Cli(monkeypatch, capsys)
    result = spotq(
        command,
        SPOTQ_QUEUE__URL="http://127.0.0.1:9/000000000000/q",
        SPOTQ_AWS__REGION="us-east-1",
        SPOTQ_IMDS__NODE_NAME="n1",
        SPOTQ_KUBE__KUBECONFIG=str(tmp_path / "missing"),  # never reached: the webhook is checked first
        SPOTQ_WEBHOOK__URL=SECRET_URL,
        SPOTQ_WEBHOOK__TEMPLATE='{"text": "$nodes"}',
    )
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "spotq: invalid setting SPOTQ_WEBHOOK__TEMPLATE: unknown name $nodes; known: $cluster, $node, $instance_id, "
        "$reason, $message, $warning, $type, $time, $title, $text"
    ]
    assert "s3cr3t" not in result.err + result.out


def test_a_bad_number_is_refused_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = Cli(monkeypatch, capsys)("run", SPOTQ_WEBHOOK__QUEUE_SIZE="0")
    assert result.code == 2 and "SPOTQ_WEBHOOK__QUEUE_SIZE" in result.err
