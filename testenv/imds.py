"""ec2-metadata-mock (the IMDS mock built by ``make testenv``) as a context manager, on 127.0.0.1 only."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from . import tools
from .procs import ManagedProcess, StartupError, free_port, wait_until


class ImdsMock:
    """One ec2-metadata-mock process: ``spot`` mode serves ``/latest/meta-data/spot/instance-action`` after
    ``notice_delay_sec`` (404 before) and ``events/recommendations/rebalance`` after ``rebalance_delay_sec``.

    Timers count from process start, so use one mock per scenario.
    """

    def __init__(
        self,
        *,
        mode: str = "spot",
        notice_delay_sec: int = 0,
        rebalance_delay_sec: int | None = None,
        action: str = "terminate",
        imdsv2: bool = False,
        instance_id: str | None = None,
        extra_args: tuple[str, ...] = (),
        workdir: Path,
        start_timeout: float = 20.0,
        verbose: bool = False,
    ) -> None:
        self.mode = mode
        self.notice_delay_sec = notice_delay_sec
        self.rebalance_delay_sec = rebalance_delay_sec
        self.action = action
        self.imdsv2 = imdsv2
        self.instance_id = instance_id
        self.extra_args = extra_args
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.verbose = verbose
        self.port = 0
        self.endpoint_url = ""
        self.spawned_at = 0.0  # time.monotonic() just before the process was started: its timers count from later
        self._proc: ManagedProcess | None = None

    def __enter__(self) -> ImdsMock:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def start(self) -> ImdsMock:
        binary = tools.tool("ec2-metadata-mock")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        args = [str(binary), self.mode, "--hostname", "127.0.0.1", "--port", str(self.port)]
        args += ["--mock-delay-sec", str(self.notice_delay_sec)]
        if self.rebalance_delay_sec is not None:
            args += ["--rebalance-delay-sec", str(self.rebalance_delay_sec)]
        if self.imdsv2:
            args.append("--imdsv2")
        if self.mode == "spot":
            args += ["--action", self.action]
        if self.instance_id:
            config = self.workdir / f"imds-{self.port}.json"
            config.write_text(json.dumps({"metadata": {"values": {"instance-id": self.instance_id}}}))
            args += ["--config-file", str(config)]
        args += list(self.extra_args)
        t0 = self.spawned_at = time.monotonic()
        self._proc = ManagedProcess("ec2-metadata-mock", args, self.workdir / f"imds-{self.port}.log")

        def serving() -> bool:
            request = urllib.request.Request(f"{self.endpoint_url}/latest/api/token", method="PUT")
            request.add_header("X-aws-ec2-metadata-token-ttl-seconds", "60")
            try:
                with urllib.request.urlopen(request, timeout=1) as resp:
                    return bool(resp.status == 200)
            except urllib.error.HTTPError:
                return True  # any HTTP answer means it is listening

        try:
            wait_until("ec2-metadata-mock", serving, timeout=self.start_timeout, processes=[self._proc])
        except StartupError:
            self.stop()
            raise
        if self.verbose:
            print(f"[testenv] IMDS mock at {self.endpoint_url} in {time.monotonic() - t0:.2f}s", file=sys.stderr)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop(5)
            self._proc = None
