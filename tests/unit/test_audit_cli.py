"""`spotq audit` as the command line runs it, where no cluster is needed: usage, settings and an unreachable API
server all exit 2 with one line (1 is kept for "something is at risk")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_cli import Cli


@pytest.fixture
def spotq(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


def test_help_names_the_exit_statuses(spotq: Cli) -> None:
    result = spotq("audit", "--help")
    assert result.code == 0
    assert "0 nothing at risk, 1 something at risk, 2 wrong setting" in " ".join(result.out.split())


def test_an_unknown_output_format_is_a_usage_error(spotq: Cli) -> None:
    result = spotq("audit", "-o", "yaml")
    assert result.code == 2 and "invalid choice: 'yaml'" in result.err


def test_an_unreadable_kubeconfig_is_named(spotq: Cli, tmp_path: Path) -> None:
    result = spotq("audit", SPOTQ_KUBE__KUBECONFIG=str(tmp_path / "missing"))
    assert result.code == 2 and "SPOTQ_KUBE__KUBECONFIG" in result.err and "Traceback" not in result.err


def test_a_wrong_node_selector_is_named(spotq: Cli) -> None:
    result = spotq("audit", SPOTQ_KUBE__NODE_SELECTOR="a in (b)")
    assert result.code == 2 and "SPOTQ_KUBE__NODE_SELECTOR" in result.err


def test_an_unreachable_api_server_is_no_verdict(spotq: Cli, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:9\n"
        "    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n"
        "  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
    )
    result = spotq("audit", "-o", "json", SPOTQ_KUBE__KUBECONFIG=str(kubeconfig))
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("spotq: cannot list ") and len(result.err.strip().splitlines()) == 1
