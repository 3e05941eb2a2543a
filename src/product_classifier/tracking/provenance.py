"""A run's provenance: the git commit it ran on and the data hashes dvc.lock records (pure reads, no MLflow)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from product_classifier.tracking import tags as tag


def data_hashes(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """md5 of the data directories as recorded in dvc.lock (what DVC will push and pull), by tag name."""
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    tags = {}
    for stage, path in tag.DATA_OUTS.items():
        for out in stages.get(stage, {}).get("outs", []):
            if out.get("path") == path and out.get("md5"):
                tags[tag.data_tag(path)] = out["md5"]
    return tags


def git_tags() -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # Code or params changed since the commit; the pipeline's own writes (dvc.lock, metrics/) don't count.
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!metrics"))
    except (OSError, subprocess.SubprocessError):
        return {}
    if not commit:
        return {}
    return {tag.MLFLOW_GIT_COMMIT: commit, tag.GIT_COMMIT: commit, tag.GIT_DIRTY: str(dirty).lower()}


def run_tags(stage: str) -> dict[str, str]:
    tags = {tag.DVC_STAGE: stage, tag.SOURCE_NAME: f"stages/{stage}.py", **git_tags(), **data_hashes()}
    if os.environ.get("DVC_EXP_NAME"):
        tags[tag.DVC_EXP_NAME] = os.environ["DVC_EXP_NAME"]
    return tags


def declared_params(stage: str, dvc_yaml: Path = Path("dvc.yaml"), params_file: Path = Path("params.yaml")) -> dict:
    """The params.yaml values dvc.yaml declares for `stage` (nested as in params.yaml): what DVC reruns the stage
    on is what its run logs, read from the two files rather than retyped in each stage."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}) if dvc_yaml.is_file() else {}
    values = (yaml.safe_load(params_file.read_text()) or {}) if params_file.is_file() else {}
    out: dict = {}
    for key in stages.get(stage, {}).get("params", []):
        if not isinstance(key, str):  # {other_file: [keys]}: not params.yaml's
            continue
        node, target, parts = values, out, key.split(".")
        for part in parts[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
            target = target.setdefault(part, {})
        if isinstance(node, dict) and parts[-1] in node:
            target[parts[-1]] = node[parts[-1]]
    return out
