"""`spotq imds` as an operator starts it: which node, and one clear line when it cannot know (in-process, see
tests/unit/test_cli.py's `Cli`)."""

from __future__ import annotations

import pytest

from tests.unit.test_cli import Cli


@pytest.fixture
def spotq(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


def test_without_a_node_name_imds_mode_refuses_to_start_naming_the_setting(spotq: Cli) -> None:
    result = spotq("imds")
    assert result.code == 2
    assert "SPOTQ_IMDS__NODE_NAME" in result.err and "NODE_NAME from the downward API" in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_a_wrong_imds_setting_is_named(spotq: Cli) -> None:
    result = spotq("imds", NODE_NAME="n1", SPOTQ_IMDS__TOKEN_TTL_SECONDS="0")
    assert result.code == 2
    assert "SPOTQ_IMDS__TOKEN_TTL_SECONDS" in result.err and "Traceback" not in result.err


def test_imds_help_lists_the_imds_settings(spotq: Cli) -> None:
    result = spotq("imds", "--help")
    assert result.code == 0
    for name in ("ENDPOINT", "POLL_INTERVAL_SECONDS", "TOKEN_TTL_SECONDS", "IMDSV1_FALLBACK", "NODE_NAME"):
        assert f"SPOTQ_IMDS__{name}" in result.out
