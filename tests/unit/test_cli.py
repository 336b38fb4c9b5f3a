"""The command line as an operator meets it: explain, --help, and one-line setting errors.

`spotq ARGS` runs in this process through `cli.main(argv)` (see `Cli`); only the tests about the process itself
(the entry point's exit status, a closed stdout pipe) start a `python -m spotq` subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from spotq import cli

EVENTS = Path(__file__).parent.parent / "data" / "events"

# Read by spotq besides its own SPOTQ_* settings: the region fallbacks and IMDS mode's downward-API node name.
FOREIGN_SETTINGS = ("AWS_REGION", "AWS_DEFAULT_REGION", "NODE_NAME")


@dataclass(frozen=True)
class Exit:
    code: int
    out: str
    err: str


class Cli:
    """`spotq ARGS` in this process, in an environment holding only the settings given, with its output captured.

    `cli.main` configures the root logger for the long-running modes; that is undone after each call so a logging
    handler bound to this test's captured stderr never outlives it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self._monkeypatch = monkeypatch
        self._capsys = capsys
        for name in list(os.environ):
            if name.upper().startswith("SPOTQ_") or name.upper() in FOREIGN_SETTINGS:
                monkeypatch.delenv(name)

    def __call__(self, *args: str, stdin: str | None = None, **env: str) -> Exit:
        for name, value in env.items():
            self._monkeypatch.setenv(name, value)
        if stdin is not None:
            self._monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        self._capsys.readouterr()
        with _logging_restored():
            code = cli.main(list(args))
        captured = self._capsys.readouterr()
        return Exit(code, captured.out, captured.err)


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    manager = logging.Logger.manager
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    levels = {name: logger.level for name, logger in manager.loggerDict.items() if isinstance(logger, logging.Logger)}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        for name, logger in manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture
def spotq(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


def python_m_spotq(*args: str, stdout: int = subprocess.PIPE, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m spotq ARGS` as a process of its own, with only the settings given."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("SPOTQ_") and k not in FOREIGN_SETTINGS}
    return subprocess.run(
        [sys.executable, "-m", "spotq", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean, **env},
        timeout=60,
    )


def test_python_m_spotq_exits_with_the_status_main_returns() -> None:
    result = python_m_spotq("run", SPOTQ_KUBE__QPS="fast")
    assert result.returncode == 2
    assert "SPOTQ_KUBE__QPS" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_spotq_console_script_is_cli_main() -> None:
    (entry,) = metadata.entry_points(group="console_scripts", name="spotq")
    assert entry.load() is cli.main


def test_explain_into_a_closed_pipe_is_quiet() -> None:
    body = str(EVENTS / "eventbridge/spot-interruption-warning.json")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before spotq wrote a byte (`spotq explain f | head -c0`)
    try:
        result = python_m_spotq("explain", body, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 0 and result.stderr == ""


def test_help_and_usage_errors_return_their_exit_status(spotq: Cli) -> None:
    helped = spotq("explain", "--help")
    assert helped.code == 0 and "Exit status" in helped.out
    wrong = spotq("unwind")
    assert wrong.code == 2 and "invalid choice" in wrong.err and wrong.out == ""
    bare = spotq()
    assert bare.code == 2 and "explain" in bare.out


def test_explain_spot_warning_from_file(spotq: Cli) -> None:
    result = spotq("explain", str(EVENTS / "eventbridge/spot-interruption-warning.json"))
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["kind"] == "spot_interruption"
    assert out["instance_ids"] == ["i-0b662ef9931388ba0"]
    assert out["event_time"] == "2025-06-03T14:20:05Z"
    assert out["deadline"] == "2025-06-03T14:22:05Z"
    assert out["actions"] == ["event", "taint", "cordon", "exclude_from_load_balancers", "drain"]


def test_explain_reads_stdin_and_reports_malformed_with_reason(spotq: Cli) -> None:
    result = spotq("explain", "-", stdin="{not json")
    assert result.code == 0
    out = json.loads(result.out)
    assert out["kind"] == "malformed" and "not JSON" in out["reason"]
    assert out["instance_ids"] == [] and out["deadline"] is None


def test_explain_follows_the_policy_settings(spotq: Cli) -> None:
    body = (EVENTS / "eventbridge/rebalance-recommendation.json").read_text()
    assert json.loads(spotq("explain", "-", stdin=body).out)["actions"] != []
    result = spotq("explain", "-", stdin=body, SPOTQ_POLICY__REBALANCE_RECOMMENDATION="none")
    assert json.loads(result.out)["actions"] == []


def test_explain_unreadable_file_fails_with_one_line(spotq: Cli) -> None:
    result = spotq("explain", "/nonexistent/body.json")
    assert result.code == 1
    assert result.err.strip().count("\n") == 0 and "cannot read" in result.err


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SPOTQ_KUBE__QPS": "fast"}, "SPOTQ_KUBE__QPS"),
        ({"SPOTQ_POLICY__REBALANCE_RECOMMENDATION": "explode"}, "SPOTQ_POLICY__REBALANCE_RECOMMENDATION"),
        ({"SPOTQ_QUEUE__WAIT_SECONDS": "99"}, "SPOTQ_QUEUE__WAIT_SECONDS"),
        ({"SPOTQ_LOG__FORMAT": "xml"}, "SPOTQ_LOG__FORMAT"),
    ],
)
def test_wrong_setting_fails_at_start_with_one_line_naming_it(spotq: Cli, env: dict[str, str], named: str) -> None:
    result = spotq("run", **env)
    assert result.code == 2
    assert named in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_missing_queue_url_is_named(spotq: Cli) -> None:
    result = spotq("run")
    assert result.code == 2
    assert "SPOTQ_QUEUE__URL" in result.err and "Traceback" not in result.err


def test_unreadable_kubeconfig_is_named(spotq: Cli, tmp_path: Path) -> None:
    result = spotq(
        "run",
        SPOTQ_QUEUE__URL="http://127.0.0.1:9/000000000000/q",
        SPOTQ_AWS__REGION="us-east-1",
        SPOTQ_KUBE__KUBECONFIG=str(tmp_path / "missing"),
    )
    assert result.code == 2
    assert "SPOTQ_KUBE__KUBECONFIG" in result.err and "Traceback" not in result.err


def test_run_help_lists_every_setting(spotq: Cli) -> None:
    from spotq import settings

    result = spotq("run", "--help")
    assert result.code == 0
    for env, _, _ in settings.describe():
        assert env in result.out


def test_readme_lists_every_setting_as_declared() -> None:
    from spotq import settings

    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    assert settings.markdown_table() in readme, (
        "regenerate: python -c 'from spotq import settings; print(settings.markdown_table())'"
    )


def test_a_misspelt_setting_is_named_not_ignored(spotq: Cli) -> None:
    result = spotq("run", SPOTQ_DRAIN__TIMEOUT_SECOND="30")
    assert result.code == 2
    assert "SPOTQ_DRAIN__TIMEOUT_SECOND" in result.err and "Traceback" not in result.err


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
    assert cli.aws_region(configured, url, environ) == expected


def test_missing_region_is_named(spotq: Cli) -> None:
    result = spotq("run", SPOTQ_QUEUE__URL="http://127.0.0.1:9/123456789012/q")
    assert result.code == 2 and "SPOTQ_AWS__REGION" in result.err


def test_explain_times_at_the_ends_of_the_calendar_are_malformed_not_a_traceback(spotq: Cli) -> None:
    body = json.loads((EVENTS / "eventbridge/spot-interruption-warning.json").read_text())
    for time in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00"):
        body["time"] = time
        result = spotq("explain", "-", stdin=json.dumps(body))
        assert result.code == 0 and "Traceback" not in result.err, result.err
        out = json.loads(result.out)
        assert out["kind"] == "malformed" and "'time'" in out["reason"]


def test_explain_shows_a_health_event_status(spotq: Cli) -> None:
    result = spotq("explain", str(EVENTS / "eventbridge/health-scheduled-change.json"))
    assert json.loads(result.out)["status"] == "upcoming"


def test_explain_an_internal_error_is_one_line_and_its_own_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from spotq import notices
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

    from spotq import parsing
    from spotq.settings import Settings

    endless = EndlessStdin()
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=endless))
    assert cli.explain("-", Settings()) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "malformed" and f"more than {parsing.MAX_BODY_BYTES} bytes" in out["reason"]
    assert sum(endless.asked) == parsing.MAX_BODY_BYTES + 1
