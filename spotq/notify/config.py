"""SPOTQ_WEBHOOK__* made into one checked configuration at start: files read, URL, headers, proxy and template
checked. A wrong setting is a ConfigError naming it, in one line — never with the URL or a header's value in it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from spotq.errors import ConfigError
from spotq.notify.templates import PRESETS, BodyTemplate, TemplateError, compile_template
from spotq.settings import WebhookSettings

# Every reason spotq records a node Event for (acting, expiring).
REASONS = ("InterruptionNotice", "DrainFinished", "DrainTimedOut", "DrainBlocked", "NoticeEnded", "RebalanceExpired")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


@dataclass(frozen=True)
class WebhookConfig:
    url: str = field(repr=False)
    template: BodyTemplate
    template_name: str
    """The preset's name, or "custom"."""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    proxy: str | None = field(default=None, repr=False)
    reasons: frozenset[str] | None = None
    cluster: str = ""
    queue_size: int = 1000
    timeout_seconds: float = 10.0
    retries: int = 3
    stop_grace_seconds: float = 5.0

    @property
    def host(self) -> str:
        """All of the URL that may be logged."""
        return urlsplit(self.url).hostname or ""

    @property
    def proxy_host(self) -> str | None:
        return urlsplit(self.proxy).hostname if self.proxy else None


def _invalid(name: str, why: str) -> ConfigError:
    return ConfigError(f"invalid setting SPOTQ_WEBHOOK__{name.upper()}: {why}")


def _read(name: str, path: str, read: Callable[[Path], str]) -> str:
    try:
        return read(Path(path))
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise _invalid(name, f"cannot read {path}: {why}") from None


def _http_url(name: str, value: str, *, what: str) -> str:
    """`value` if it is an absolute http(s) URL with a host; the error never repeats the value."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise _invalid(name, f"not a valid {what}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(name, f"not an http:// or https:// {what} with a host")
    if any(c.isspace() for c in value):
        raise _invalid(name, f"the {what} contains white space")
    return value


def _headers(text: str) -> dict[str, str]:
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise _invalid("headers", f"not JSON ({exc}); give a JSON object of strings") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise _invalid("headers", 'give a JSON object of strings, e.g. {"Authorization": "Bearer ..."}')
    for key, value in parsed.items():
        if not _TOKEN.match(key):
            raise _invalid("headers", f"{key!r} is not a header name")
        if "\r" in value or "\n" in value:
            raise _invalid("headers", f"the value of {key} contains a line break")
    return parsed


def _json_type(headers: Mapping[str, str]) -> bool:
    """The body is JSON unless a Content-Type header says otherwise."""
    given = next((v for k, v in headers.items() if k.lower() == "content-type"), "application/json")
    media = given.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _reasons(text: str) -> frozenset[str] | None:
    chosen = [r.strip() for r in text.split(",") if r.strip()]
    if not chosen:
        return None
    unknown = [r for r in chosen if r not in REASONS]
    if unknown:
        raise _invalid("reasons", f"unknown reason {', '.join(unknown)}; known: {', '.join(REASONS)}")
    return frozenset(chosen)


def load(settings: WebhookSettings, *, read: Callable[[Path], str] = Path.read_text) -> WebhookConfig | None:
    """The checked configuration, or None when no webhook is set; ConfigError naming a wrong setting."""
    if settings.url and settings.url_file:
        raise _invalid("url_file", "set SPOTQ_WEBHOOK__URL or SPOTQ_WEBHOOK__URL_FILE, not both")
    if settings.url_file:
        url = _http_url("url_file", _read("url_file", settings.url_file, read).strip(), what="URL in the file")
    elif settings.url:
        url = _http_url("url", settings.url.strip(), what="URL")
    else:
        return None
    headers = _headers(settings.headers)
    proxy = _http_url("proxy", settings.proxy.strip(), what="proxy URL") if settings.proxy else None
    if settings.template_file:
        source, name, setting = _read("template_file", settings.template_file, read), "custom", "template_file"
    elif settings.template in PRESETS:
        source, name, setting = PRESETS[settings.template], settings.template, "template"
    elif re.fullmatch(r"[A-Za-z_-]+", settings.template.strip()):
        raise _invalid("template", f"unknown preset {settings.template.strip()!r}; presets: {', '.join(PRESETS)}")
    else:
        source, name, setting = settings.template, "custom", "template"
    try:
        # The presets are JSON whatever the Content-Type says.
        template = compile_template(source, json_body=name in PRESETS or _json_type(headers), slack=name == "slack")
    except TemplateError as exc:
        raise _invalid(setting, str(exc)) from None
    return WebhookConfig(
        url=url,
        template=template,
        template_name=name,
        headers=headers,
        proxy=proxy,
        reasons=_reasons(settings.reasons),
        cluster=settings.cluster_name,
        queue_size=settings.queue_size,
        timeout_seconds=settings.timeout_seconds,
        retries=settings.retries,
        stop_grace_seconds=settings.stop_grace_seconds,
    )
