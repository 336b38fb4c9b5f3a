"""Run spotq itself (`python -m spotq run`) as a subprocess against the local environment."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SpotqProcess:
    """`spotq run` with the given settings; stopped with SIGTERM (then SIGKILL) by PID."""

    command = "run"  # the spotq subcommand this class starts

    def __init__(
        self, env: Mapping[str, str], *, log_path: Path, ready_timeout: float = 60.0, wait_for: str = "/readyz"
    ) -> None:
        """`wait_for`: the endpoint that must answer 200 before start() returns (/readyz, or /healthz)."""
        self.port = free_port()
        self.log_path = log_path
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SPOTQ_")},
            "SPOTQ_SERVER__ADDRESS": "127.0.0.1",
            "SPOTQ_SERVER__PORT": str(self.port),
            "SPOTQ_LOG__FORMAT": "json",
            **env,
        }
        self._ready_timeout = ready_timeout
        self._wait_for = wait_for
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spotq", self.command], env=self._env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"spotq {self.command} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.get(self._wait_for)[0] == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"spotq {self.command}: {self._wait_for} not 200 after {self._ready_timeout:.0f}s:\n{self.log_tail()}"
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        code = self.process.returncode
        self.process = None
        return code
