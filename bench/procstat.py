"""CPU seconds and memory of a process from /proc: utime+stime, VmRSS sampled, VmHWM (the kernel's own peak); the
machine's load and what it is (recorded with every result).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak resident set) in MiB."""
    result = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                result[key] = int(value.split()[0]) / 1024
    return result


def load_average() -> float:
    return os.getloadavg()[0]


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


@dataclass
class Sampler:
    """Samples CPU and RSS of some processes every `interval` s in a thread (bounded by `limit` samples)."""

    pids: dict[str, int]
    interval: float = 0.5
    limit: int = 20_000
    samples: list[tuple[float, dict[str, tuple[float, float]]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="procstat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.samples) < self.limit:
            row = {}
            for name, pid in self.pids.items():
                try:
                    row[name] = (cpu_seconds(pid), memory_mb(pid).get("VmRSS", 0.0))
                except OSError:
                    continue
            self.samples.append((time.time(), row))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def cpu_used(self, name: str) -> float | None:
        rows = [row[name][0] for _, row in self.samples if name in row]
        return rows[-1] - rows[0] if len(rows) >= 2 else None

    def peak_rss(self, name: str) -> float | None:
        rows = [row[name][1] for _, row in self.samples if name in row]
        return max(rows) if rows else None

    def rss_curve(self, name: str, start: float, every: float = 5.0) -> list[tuple[float, float]]:
        """(seconds after `start`, the highest VmRSS MB sampled in that `every`-second step): where a peak came."""
        steps: dict[int, float] = {}
        for at, row in self.samples:
            if name in row:
                step = int((at - start) // every)
                steps[step] = max(steps.get(step, 0.0), row[name][1])
        return [(round(step * every, 1), round(mb, 1)) for step, mb in sorted(steps.items())]
