"""Shared fixtures: real DVC pipelines in temporary git repositories, with tiny params."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CI_WORKFLOW = PROJECT / ".github/workflows/ci.yml"

# Small enough for a full `dvc repro` in well under a minute on 2 cores.
TINY = {
    "data": {"sample_size": 300},
    "preprocess": {"image_size": 32, "max_len": 24},
    "train": {"epochs": 3, "batch_size": 32},
    "evaluate": {"latency_samples": 5},
}


def deep_update(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = deep_update(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var, value in (("GIT_AUTHOR_NAME", "test"), ("GIT_AUTHOR_EMAIL", "test@example.com"),
                       ("GIT_COMMITTER_NAME", "test"), ("GIT_COMMITTER_EMAIL", "test@example.com")):
        e.setdefault(var, value)
    e.pop("KERAS_BACKEND", None)
    return e


def sh(cmd: str, cwd: Path, check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, shell=True, cwd=cwd, env={**env(), **(extra_env or {})},
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_repo(path: Path, params: dict | None = None) -> Path:
    """A fresh git + DVC repository holding this project's pipeline, committed once."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(PROJECT / name, path / name)
    shutil.copytree(PROJECT / "stages", path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROJECT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    base = yaml.safe_load((PROJECT / "params.yaml").read_text())
    (path / "params.yaml").write_text(yaml.safe_dump(deep_update(base, deep_update(TINY, params or {})), sort_keys=False))
    sh("git init -q -b main && dvc init -q && dvc config core.analytics false && git add -A && git commit -qm init", path)
    return path


def workflow_step(name: str, workflow: Path = CI_WORKFLOW) -> dict:
    """The step named `name` in a workflow file, as CI runs it."""
    jobs = yaml.safe_load(workflow.read_text())["jobs"].values()
    [step] = [s for job in jobs for s in job.get("steps", []) if s.get("name") == name]
    return step


# --- servers started by tests -------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process(cmd: list, log: Path, env: dict | None = None, cwd: Path = PROJECT):
    """A server process for the duration of the block, output to `log`, stopped (then killed) at the end."""
    with log.open("w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode} before {url} answered:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url} not up after {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """The real pipeline, run once per test session on the tiny sample; treat it as read-only."""
    repo = make_repo(tmp_path_factory.mktemp("tiny") / "repo")
    sh("dvc repro -q", repo)
    return repo


@pytest.fixture(scope="session")
def tiny_models(tiny_repo) -> Path:
    return tiny_repo / "models"
