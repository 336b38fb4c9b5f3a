"""The command line as an operator meets it: explain, --help, and one-line setting errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EVENTS = Path(__file__).parent.parent / "data" / "events"


def spotq(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPOTQ_")}
    return subprocess.run(
        [sys.executable, "-m", "spotq", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )


def test_explain_spot_warning_from_file() -> None:
    result = spotq("explain", str(EVENTS / "eventbridge/spot-interruption-warning.json"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "spot_interruption"
    assert out["instance_ids"] == ["i-0b662ef9931388ba0"]
    assert out["event_time"] == "2025-06-03T14:20:05Z"
    assert out["deadline"] == "2025-06-03T14:22:05Z"
    assert out["actions"] == ["event", "taint", "cordon", "exclude_from_load_balancers", "drain"]


def test_explain_reads_stdin_and_reports_malformed_with_reason() -> None:
    result = spotq("explain", "-", stdin="{not json")
    assert result.returncode == 0
    out = json.loads(result.stdout)
    assert out["kind"] == "malformed" and "not JSON" in out["reason"]
    assert out["instance_ids"] == [] and out["deadline"] is None


def test_explain_follows_the_policy_settings() -> None:
    body = (EVENTS / "eventbridge/rebalance-recommendation.json").read_text()
    result = spotq("explain", "-", stdin=body, SPOTQ_POLICY__REBALANCE_RECOMMENDATION="none")
    assert json.loads(result.stdout)["actions"] == []


def test_explain_unreadable_file_fails_with_one_line() -> None:
    result = spotq("explain", "/nonexistent/body.json")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "cannot read" in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SPOTQ_KUBE__QPS": "fast"}, "SPOTQ_KUBE__QPS"),
        ({"SPOTQ_POLICY__REBALANCE_RECOMMENDATION": "explode"}, "SPOTQ_POLICY__REBALANCE_RECOMMENDATION"),
        ({"SPOTQ_QUEUE__WAIT_SECONDS": "99"}, "SPOTQ_QUEUE__WAIT_SECONDS"),
        ({"SPOTQ_LOG__FORMAT": "xml"}, "SPOTQ_LOG__FORMAT"),
    ],
)
def test_wrong_setting_fails_at_start_with_one_line_naming_it(env: dict[str, str], named: str) -> None:
    result = spotq("run", **env)
    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_queue_url_is_named() -> None:
    result = spotq("run")
    assert result.returncode == 2
    assert "SPOTQ_QUEUE__URL" in result.stderr and "Traceback" not in result.stderr


def test_unreadable_kubeconfig_is_named(tmp_path: Path) -> None:
    result = spotq(
        "run",
        SPOTQ_QUEUE__URL="http://127.0.0.1:9/000000000000/q",
        SPOTQ_AWS__REGION="us-east-1",
        SPOTQ_KUBE__KUBECONFIG=str(tmp_path / "missing"),
    )
    assert result.returncode == 2
    assert "SPOTQ_KUBE__KUBECONFIG" in result.stderr and "Traceback" not in result.stderr


def test_run_help_lists_every_setting() -> None:
    from spotq import settings

    result = spotq("run", "--help")
    assert result.returncode == 0
    for env, _, _ in settings.describe():
        assert env in result.stdout


def test_readme_lists_every_setting_as_declared() -> None:
    from spotq import settings

    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    assert settings.markdown_table() in readme, (
        "regenerate: python -c 'from spotq import settings; print(settings.markdown_table())'"
    )


def test_a_misspelt_setting_is_named_not_ignored() -> None:
    result = spotq("run", SPOTQ_DRAIN__TIMEOUT_SECOND="30")
    assert result.returncode == 2
    assert "SPOTQ_DRAIN__TIMEOUT_SECOND" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("configured", "environ", "url", "expected"),
    [
        ("eu-west-1", {"AWS_REGION": "us-west-2"}, "https://sqs.ap-south-1.amazonaws.com/1/q", "eu-west-1"),
        (None, {"AWS_REGION": "us-west-2"}, "https://sqs.ap-south-1.amazonaws.com/1/q", "us-west-2"),
        (None, {"AWS_DEFAULT_REGION": "ca-central-1"}, "http://127.0.0.1:5000/1/q", "ca-central-1"),
        (None, {}, "https://sqs.ap-south-1.amazonaws.com/123456789012/q", "ap-south-1"),
        (None, {}, "http://127.0.0.1:5000/123456789012/q", None),
    ],
)
def test_region_comes_from_setting_then_sdk_environment_then_queue_url(
    configured: str | None, environ: dict[str, str], url: str, expected: str | None
) -> None:
    from spotq import cli

    assert cli.aws_region(configured, url, environ) == expected


def test_missing_region_is_named() -> None:
    result = spotq("run", SPOTQ_QUEUE__URL="http://127.0.0.1:9/123456789012/q")
    assert result.returncode == 2 and "SPOTQ_AWS__REGION" in result.stderr


def test_explain_into_a_closed_pipe_is_quiet() -> None:
    body = str(EVENTS / "eventbridge/spot-interruption-warning.json")
    result = subprocess.run(
        f"{sys.executable} -m spotq explain {body} | head -c 1", shell=True, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_explain_times_at_the_ends_of_the_calendar_are_malformed_not_a_traceback() -> None:
    body = json.loads((EVENTS / "eventbridge/spot-interruption-warning.json").read_text())
    for time in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00"):
        body["time"] = time
        result = spotq("explain", "-", stdin=json.dumps(body))
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        out = json.loads(result.stdout)
        assert out["kind"] == "malformed" and "'time'" in out["reason"]


def test_explain_shows_a_health_event_status() -> None:
    result = spotq("explain", str(EVENTS / "eventbridge/health-scheduled-change.json"))
    assert json.loads(result.stdout)["status"] == "upcoming"


def test_explain_an_internal_error_is_one_line_and_its_own_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from spotq import cli, notices
    from spotq.settings import Settings

    def broken(event_time: object, action: str) -> object:
        raise RuntimeError("bug in spotq\nsecond line")

    monkeypatch.setattr(notices, "spot_deadline", broken)
    code = cli.explain(str(EVENTS / "eventbridge/spot-interruption-warning.json"), Settings())
    captured = capsys.readouterr()
    assert code == cli.EXIT_INTERNAL_ERROR and code not in (0, 1, 2)
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "internal error" in captured.err and "RuntimeError: bug in spotq" in captured.err


class EndlessStdin:
    """A stdin that never ends: reading it all would never return."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("explain read all of stdin")
        self.asked.append(size)
        return b" " * size


def test_explain_reads_at_most_one_byte_over_the_limit_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from spotq import cli, parsing
    from spotq.settings import Settings

    endless = EndlessStdin()
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=endless))
    assert cli.explain("-", Settings()) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "malformed" and f"more than {parsing.MAX_BODY_BYTES} bytes" in out["reason"]
    assert sum(endless.asked) == parsing.MAX_BODY_BYTES + 1
