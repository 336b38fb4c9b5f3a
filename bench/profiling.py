"""Sample spotq with py-spy while it works and say where its CPU time goes (own time per function, and the
share of samples under each pipeline stage)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# Where in spotq a sample was, by the innermost spotq frame on its stack (first match wins).
STAGES = (
    ("dispatching/receive (aiobotocore)", ("aiobotocore", "botocore", "spotq/aws/sqs.py")),
    ("kube client (aiohttp request/response)", ("spotq/kube/client.py",)),
    ("draining", ("spotq/draining.py", "spotq/kube/pods.py")),
    ("marking nodes", ("spotq/kube/marks.py",)),
    ("node index (watch)", ("spotq/kube/nodes.py",)),
    ("handling/parsing/planning", ("spotq/handling.py", "spotq/parsing.py", "spotq/planning.py")),
    ("logging", ("logging/__init__.py", "spotq/observability/logs.py")),
    ("metrics/probes", ("prometheus_client", "spotq/observability")),
)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


class Profile:
    """`py-spy record` on a pid until `stop()` (SIGINT makes py-spy write its output)."""

    def __init__(self, pid: int, out: Path, *, rate: int = 50, duration: int = 3600) -> None:
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None
        exe = py_spy()
        if exe is None:
            return
        self.process = subprocess.Popen(
            [
                *(exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking"),
                *("--format", "raw", "--output", str(out), "--duration", str(duration)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> dict[str, Any] | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self.out.exists():
            err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            return {"error": err.strip()[-500:]}
        return summarize(self.out)


def _frame_file(frame: str) -> str:
    # raw format frames look like "function (path/to/file.py:123)"
    inside = frame.rpartition("(")[2].rstrip(")")
    return inside.rpartition(":")[0]


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    own: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        name, _, location = leaf.partition(" (")
        own[f"{name} ({_short(location.rstrip(')'))})"] += count
        stage = "other (event loop, ssl, json)"
        for frame in reversed(frames):
            file = _frame_file(frame)
            matched = next((label for label, keys in STAGES if any(k in file for k in keys)), None)
            if matched:
                stage = matched
                break
        stages[stage] += count
    if total == 0:
        return {"samples": 0}
    return {
        "samples": total,
        "stages": {k: round(100 * v / total, 1) for k, v in stages.most_common()},
        "top_own": [(k, round(100 * v / total, 1)) for k, v in own.most_common(top)],
    }


def _short(location: str) -> str:
    path, _, line = location.rpartition(":")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line}"
