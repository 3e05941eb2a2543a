"""The served model's identity: its artifacts checked against `dvc.lock`, and a version derived from it.

DVC records a directory out as `md5: <hash>.dir`, where <hash> is the md5 of the JSON list of
`{"md5": <file md5>, "relpath": <path inside the directory>}` entries sorted by relpath.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from product_classifier import paths
from product_classifier.errors import DataError

LOCK_FILE = "dvc.lock"


def file_md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def dir_md5(entries: list[dict]) -> str:
    """DVC's directory hash of `[{"md5", "relpath"}, ...]` (pure: no files read)."""
    ordered = sorted(({"md5": e["md5"], "relpath": e["relpath"]} for e in entries), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(ordered, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def directory_hash(folder: Path) -> str:
    entries = [{"md5": file_md5(p), "relpath": p.relative_to(folder).as_posix()}
               for p in sorted(folder.rglob("*")) if p.is_file()]
    return dir_md5(entries)


def find_lock(models_dir: Path, explicit: Path | None = None) -> Path:
    """`explicit` (DVC_LOCK_PATH), else the first dvc.lock in MODELS_DIR or one of its parents."""
    if explicit is not None:
        if not explicit.is_file():
            raise DataError(f"DVC_LOCK_PATH={explicit}: no such file")
        return explicit
    for folder in (models_dir.resolve(), *models_dir.resolve().parents):
        if (folder / LOCK_FILE).is_file():
            return folder / LOCK_FILE
    raise DataError(f"no {LOCK_FILE} next to or above MODELS_DIR={models_dir}; set DVC_LOCK_PATH")


def locked_hashes(lock: dict, lock_dir: Path, models_dir: Path) -> dict[str, str]:
    """{"lstm": "<md5>.dir", ...} as dvc.lock records the model outs (pure, given the parsed lock)."""
    outs = {o["path"].rstrip("/"): o.get("md5") for stage in lock.get("stages", {}).values() for o in stage.get("outs", [])}
    try:
        prefix = Path(os.path.relpath(models_dir.resolve(), lock_dir.resolve())).as_posix()
    except ValueError:  # another drive
        prefix = "models"
    if prefix.startswith(".."):  # models outside the lock's tree (e.g. mounted elsewhere): DVC's default place
        prefix = "models"
    found = {}
    for name in paths.MODEL_DIRS:
        path = f"{prefix}/{name}" if prefix != "." else name
        if not outs.get(path):
            raise DataError(f"dvc.lock in {lock_dir} records no out {path}; is it the lock of the pipeline that made the models?")
        found[name] = outs[path]
    return found


def model_version(hashes: dict[str, str]) -> str:
    """Short, stable id of the model outs' hashes: changes whenever any model artifact does."""
    joined = ",".join(f"{name}={hashes[name]}" for name in sorted(hashes))
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ModelIdentity:
    version: str
    hashes: dict[str, str]
    lock_path: Path


def unreadable(folder: Path) -> Path | None:
    """The first directory or file under `folder` (itself included) this process cannot read, or None."""
    if not os.access(folder, os.R_OK | os.X_OK):
        return folder
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            if not os.access(os.path.join(root, name), os.R_OK | os.X_OK):
                return Path(root, name)
        for name in files:
            if not os.access(os.path.join(root, name), os.R_OK):
                return Path(root, name)
    return None


def check_readable(*paths: Path) -> None:
    """DataError naming the first unreadable path, e.g. a bind-mounted models/ the image's uid 10001 cannot read."""
    for path in paths:
        bad = unreadable(path) if path.is_dir() else None if not path.exists() or os.access(path, os.R_OK) else path
        if bad is not None:
            fix = f"chmod -R a+rX {path}" if path.is_dir() else f"chown {os.getuid()} {path}"
            raise DataError(f"{bad}: not readable by uid {os.getuid()}, the user serving runs as; "
                            f"make it readable (e.g. `{fix}`)")


def verify_artifacts(models_dir: Path, lock_path: Path | None = None) -> ModelIdentity:
    """Check every model out against dvc.lock; raise DataError naming what is missing, unreadable or differs."""
    check_readable(models_dir)
    lock_path = find_lock(models_dir, lock_path)
    check_readable(lock_path)
    try:
        lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{lock_path}: not valid YAML ({exc})") from None
    expected = locked_hashes(lock, lock_path.parent, models_dir)
    for name, want in expected.items():
        folder = models_dir / name
        if not folder.is_dir():
            raise DataError(f"{folder}: missing model artifact directory; run `dvc repro` or `dvc pull`")
        got = directory_hash(folder)
        if got != want:
            raise DataError(f"{folder} does not match {lock_path} (hash {got}, locked {want}): "
                            "the models and dvc.lock come from different runs; run `dvc pull` or `dvc repro`")
    return ModelIdentity(model_version(expected), expected, lock_path)
