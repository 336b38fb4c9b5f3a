"""Child processes of the test environment: started with their output in a log file, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO


class StartupError(RuntimeError):
    """A component of the test environment failed to start or become ready."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class ManagedProcess:
    """One child process whose stdout and stderr go to ``log_path``.

    :meth:`stop` signals exactly this PID (SIGTERM, then SIGKILL after ``timeout``); nothing else is touched.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                # Its own session, so a Ctrl-C in the terminal reaches only us; we stop it ourselves.
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def check_running(self) -> None:
        """Raise :class:`StartupError` with the log tail if the process has exited."""
        code = self.popen.poll()
        if code is not None:
            raise StartupError(
                f"{self.name} (pid {self.pid}) exited with code {code}; last lines of {self.log_path}:\n"
                f"{self.log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM this PID, wait up to ``timeout`` s, then SIGKILL it. Returns the exit code."""
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.popen.kill()
                    self.popen.wait(5)
            return self.popen.returncode
        finally:
            self._log.close()


def wait_until(
    what: str,
    predicate: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.1,
    processes: Sequence[ManagedProcess] = (),
) -> None:
    """Poll ``predicate()`` until truthy; fail early if one of ``processes`` died, late on timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        for proc in processes:
            proc.check_running()
        try:
            if predicate():
                return
        except Exception as exc:  # the component is still coming up
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            logs = "".join(f"\n--- last lines of {p.name} log {p.log_path} ---\n{p.log_tail(20)}" for p in processes)
            raise StartupError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{logs}")
        time.sleep(interval)
