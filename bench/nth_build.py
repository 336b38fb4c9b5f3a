"""aws-node-termination-handler (NTH) built from the peers archive into the tools cache, once.

`python -m bench.nth_build` builds it (and says where, or why not); the benchmark starts the same build in the
background at the beginning of a run (`Build.start`) and waits for it only when its first NTH phase comes.

The binary goes where testenv/build.sh puts the other tools: ``<cache>/tools/nth-<version>-<hash>/nth``, the hash
being the archive's sha256 (its first 12 digits), with a ``.complete`` stamp; a build in progress writes to
``<dir>.tmp`` and is moved into place when done. Nothing of NTH is kept in this repository; its source comes from
``../shared/peers/`` (see its README) and its dependencies from the Go module proxy (5-7 min cold on two cores).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testenv import tools

VERSION = "v1.25.6"
COMMIT = "62a8761"  # v1.25.6 + 3 commits (configurable KUBE_API_QPS / KUBE_API_BURST)
ARCHIVE = f"aws-node-termination-handler-{VERSION}-{COMMIT}.tar.gz"
ARCHIVE_SHA256 = "d2d54758b46cd7b97ecb1bb9ba04fa3a8f3364aec92ae16eded6ef0c706f0ea3"
BUILD_TIMEOUT = 1800.0


def peers_dir() -> Path:
    """``$SPOTQ_PEERS``, else ``../shared/peers`` beside the checkout."""
    configured = os.environ.get("SPOTQ_PEERS")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "peers"


def tool_dir() -> Path:
    return tools.cache_dir() / "tools" / f"nth-{VERSION}-{ARCHIVE_SHA256[:12]}"


def built() -> Path | None:
    """The cached binary if a complete build is there."""
    binary = tool_dir() / "nth"
    complete = (tool_dir() / ".complete").exists() and os.access(binary, os.X_OK)
    return binary if complete else None


def why_not() -> str | None:
    """Why NTH cannot be built here (one line), or None."""
    archive = peers_dir() / ARCHIVE
    if not archive.exists():
        return f"no archive at {archive} (set SPOTQ_PEERS to the folder holding {ARCHIVE})"
    if shutil.which("go") is None:
        return "no Go toolchain on PATH (needed to build it from the archive)"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != ARCHIVE_SHA256:
        return f"{archive} has sha256 {digest}, expected {ARCHIVE_SHA256}"
    return None


def build(say: Callable[[str], None], cancel: threading.Event | None = None) -> Path | None:
    """Build into the tools cache unless already there; None (and one line saying why) when it cannot be.
    Setting `cancel` stops the go command (its own process group) and leaves nothing in the cache."""
    found = built()
    if found is not None:
        return found
    reason = why_not()
    if reason is not None:
        say(f"NTH skipped: {reason}")
        return None
    say(f"NTH: building {VERSION}-{COMMIT} into {tool_dir()} (5-7 min cold: its modules come from the Go proxy)")
    started = time.monotonic()
    final = tool_dir()
    partial = final.with_name(final.name + ".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "src").mkdir(parents=True)
    with tarfile.open(peers_dir() / ARCHIVE) as tar:
        tar.extractall(partial / "src", filter="data")
    (source,) = [p for p in (partial / "src").iterdir() if (p / "go.mod").exists()]
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}
    argv = [shutil.which("go") or "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial / "nth"),
            "./cmd/node-termination-handler.go"]  # fmt: skip
    log = partial / "build.log"
    with log.open("wb") as output:
        go = subprocess.Popen(
            argv, cwd=source, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    stop = cancel or threading.Event()
    deadline = time.monotonic() + BUILD_TIMEOUT
    while go.poll() is None and not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.5)
    if go.poll() is None:
        os.killpg(go.pid, signal.SIGKILL)  # its own session: the go command and the compilers it started
        go.wait()
        shutil.rmtree(partial, ignore_errors=True)
        say("NTH skipped: build stopped" if stop.is_set() else f"NTH skipped: no build within {BUILD_TIMEOUT:.0f}s")
        return None
    if go.returncode != 0:
        say(f"NTH skipped: go build failed ({go.returncode}): {log.read_text(errors='replace').strip()[-500:]}")
        return None
    shutil.rmtree(partial / "src")
    log.unlink()
    (partial / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    say(f"NTH: built {final / 'nth'} in {time.monotonic() - started:.0f}s")
    return final / "nth"


@dataclass
class Build:
    """The build in a background thread, started early in a run; `wait` gives its result when it is needed."""

    say: Callable[[str], None]
    result: Path | None = None
    _thread: threading.Thread | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _cancel: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Build:
        def work() -> None:
            try:
                self.result = build(self.say, self._cancel)
            finally:
                self._done.set()

        self._thread = threading.Thread(target=work, name="nth build", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float = BUILD_TIMEOUT + 60) -> Path | None:
        if self._thread is None:
            return None
        if not self._done.is_set():
            self.say("NTH: waiting for its build to finish")
        if not self._done.wait(timeout):
            self.say(f"NTH skipped: its build did not finish within {timeout:.0f}s")
            return None
        return self.result

    def stop(self) -> None:
        """Stop a build still running (the run is over or interrupted)."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(10)


if __name__ == "__main__":
    path = build(lambda line: print(line, flush=True))
    print(path if path is not None else "not built")
    sys.exit(0 if path is not None else 1)
