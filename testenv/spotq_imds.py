"""Run `python -m spotq imds` (IMDS mode) as a subprocess, like testenv.spotq.SpotqProcess runs `spotq run`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .spotq import SpotqProcess

_LOOPBACK = re.compile(r"^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?/?$")


class SpotqImdsProcess(SpotqProcess):
    """`spotq imds` with the given settings. `wait_for` is the probe that must answer 200 before start() returns:
    /readyz (IMDS answered and the node index synced) or /healthz (up, e.g. while IMDS is meant to be dead).

    NODE_NAME is not inherited from this process's environment: pass it in `env`, as the downward API would.
    """

    command = "imds"

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        log_path: Path,
        ready_timeout: float = 60.0,
        wait_for: str = "/readyz",
    ) -> None:
        endpoint = env.get("SPOTQ_IMDS__ENDPOINT", "")
        if not _LOOPBACK.match(endpoint):
            # The default is the real link-local IMDS address: a test must never send traffic there.
            raise ValueError(f"SPOTQ_IMDS__ENDPOINT must be a loopback URL in tests, got {endpoint!r}")
        super().__init__(env, log_path=log_path, ready_timeout=ready_timeout, wait_for=wait_for)
        if "NODE_NAME" not in env:
            self._env.pop("NODE_NAME", None)
