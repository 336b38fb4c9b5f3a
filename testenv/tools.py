"""Locate the binaries that `make testenv` (testenv/build.sh) builds and caches outside the repository."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

TESTENV_DIR = Path(__file__).resolve().parent

#: Binaries built by testenv/build.sh.
TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "ec2-metadata-mock",
    "promtool",
)

# Must list the same files, in the same order, as `stamp_files` in testenv/build.sh.
_STAMP_FILES = (
    "versions.env",
    "gomod/kubernetes/go.mod",
    "gomod/kubernetes/go.sum",
    "gomod/etcd/go.mod",
    "gomod/etcd/go.sum",
)


class MissingBinaryError(RuntimeError):
    """A test-environment binary is not built (or not at the pinned versions)."""


def versions() -> dict[str, str]:
    """The pinned versions from testenv/versions.env (KEY=VALUE lines)."""
    result: dict[str, str] = {}
    for line in (TESTENV_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip().strip("'\"")
    return result


def cache_dir() -> Path:
    """``$SPOTQ_CACHE``, else ``~/.cache/spotq``."""
    configured = os.environ.get("SPOTQ_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "spotq"


def version_stamp() -> str:
    """The same 12-hex-digit stamp build.sh puts in ``bin-<stamp>``."""
    digest = hashlib.sha256()
    for name in _STAMP_FILES:
        digest.update((TESTENV_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def bin_dir() -> Path:
    """Directory holding the binaries: ``$SPOTQ_TESTENV_BIN`` if set, else ``<cache>/bin-<stamp>``."""
    configured = os.environ.get("SPOTQ_TESTENV_BIN")
    if configured:
        return Path(configured)
    return cache_dir() / f"bin-{version_stamp()}"


def tool(name: str) -> Path:
    """Path of one binary; raises :class:`MissingBinaryError` telling to run ``make testenv``."""
    if name not in TOOLS:
        raise ValueError(f"unknown test-environment tool {name!r}; known: {', '.join(TOOLS)}")
    path = bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingBinaryError(
            f"{name} is not built at the pinned versions (looked for {path}). "
            "Run `make testenv` from the repository root (builds from Go modules; the first build takes a while)."
        )
    return path


def missing_tools(names: tuple[str, ...] = TOOLS) -> list[str]:
    """Names of the tools that are not built yet."""
    missing = []
    for name in names:
        try:
            tool(name)
        except MissingBinaryError:
            missing.append(name)
    return missing
