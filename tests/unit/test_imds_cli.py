"""`spotq imds` as an operator starts it: which node, and one clear line when it cannot know."""

from __future__ import annotations

import os
import subprocess
import sys


def spotq(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPOTQ_") and k != "NODE_NAME"}
    return subprocess.run(
        [sys.executable, "-m", "spotq", *args], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


def test_without_a_node_name_imds_mode_refuses_to_start_naming_the_setting() -> None:
    result = spotq("imds")
    assert result.returncode == 2
    assert "SPOTQ_IMDS__NODE_NAME" in result.stderr and "NODE_NAME from the downward API" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_wrong_imds_setting_is_named() -> None:
    result = spotq("imds", NODE_NAME="n1", SPOTQ_IMDS__TOKEN_TTL_SECONDS="0")
    assert result.returncode == 2
    assert "SPOTQ_IMDS__TOKEN_TTL_SECONDS" in result.stderr and "Traceback" not in result.stderr


def test_imds_help_lists_the_imds_settings() -> None:
    result = spotq("imds", "--help")
    assert result.returncode == 0
    for name in ("ENDPOINT", "POLL_INTERVAL_SECONDS", "TOKEN_TTL_SECONDS", "IMDSV1_FALLBACK", "NODE_NAME"):
        assert f"SPOTQ_IMDS__{name}" in result.stdout
