"""The served model's identity: models/bundle.json tied to a pipeline run by `dvc.lock`, its files to their sha256.

The fuse stage writes `models/bundle.json` (inference/bundle.py): every file serving runs, with its sha256, and the
version they make. dvc.lock records that file's md5 like any file out, so "these models are that run's" is one
md5 comparison; "these files are the bundle's" is the bundle's own check, done once at startup.

`python -m serving.artifacts prune MODELS_DIR` (the image build runs it) deletes what serving never reads, the
Keras models (serving runs their ONNX exports); the bundle does not list them, so the identity is unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from product_classifier import paths
from product_classifier.errors import DataError, UserError
from product_classifier.inference import bundle

LOCK_FILE = "dvc.lock"
PRUNED_SUFFIXES = (".keras",)  # what serving never reads: it runs each model's ONNX export (paths.ONNX_FILE)


@dataclass(frozen=True)
class ModelIdentity:
    version: str
    files: dict[str, str]  # served file (relative to models/) -> sha256
    lock_path: Path


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


def locked_md5(lock: dict, lock_dir: Path, models_dir: Path) -> str:
    """The md5 dvc.lock records for MODELS_DIR's bundle.json (pure, given the parsed lock)."""
    outs = {o["path"]: o.get("md5") for stage in lock.get("stages", {}).values() for o in stage.get("outs", [])}
    try:
        prefix = Path(os.path.relpath(models_dir.resolve(), lock_dir.resolve())).as_posix()
    except ValueError:  # another drive
        prefix = paths.MODELS.as_posix()
    if prefix.startswith(".."):  # models outside the lock's tree (e.g. mounted elsewhere): DVC's default place
        prefix = paths.MODELS.as_posix()
    out = f"{prefix}/{paths.BUNDLE_FILE}" if prefix != "." else paths.BUNDLE_FILE
    if not outs.get(out):
        raise DataError(f"dvc.lock in {lock_dir} records no out {out}; is it the lock of the pipeline that made "
                        "the models?")
    return outs[out]


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


def identity(served: bundle.Manifest, lock_path: Path) -> ModelIdentity:
    """The bundle's identity, once dvc.lock vouches for it: DataError when they come from different runs."""
    try:
        lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{lock_path}: not valid YAML ({exc})") from None
    want = locked_md5(lock, lock_path.parent, served.models_dir)
    if served.md5 != want:
        raise DataError(f"{served.models_dir / paths.BUNDLE_FILE} does not match {lock_path} (md5 {served.md5}, "
                        f"locked {want}): the models and dvc.lock come from different runs; run `dvc pull` or "
                        "`dvc repro`")
    return ModelIdentity(served.version, served.files, lock_path)


def verify_artifacts(models_dir: Path, lock_path: Path | None = None, hash_files: bool = True) -> ModelIdentity:
    """Check the models against dvc.lock (and, with `hash_files`, every served file against the bundle); raise
    DataError naming what is missing, unreadable or differs. Serving hashes the files once: here when
    `python -m serving` starts (the app then loads without hashing), else when the app's predictor loads."""
    check_readable(models_dir)
    lock_path = find_lock(models_dir, lock_path)
    check_readable(lock_path)
    manifest = bundle.read_manifest(models_dir)
    if hash_files:
        bundle.check_hashes(manifest)
    return identity(manifest, lock_path)


def prune(models_dir: Path) -> tuple[int, int]:
    """Delete what serving never reads (the Keras models) from a bundle's folder. Returns (files deleted, bytes
    freed); run again, it changes nothing."""
    served = bundle.read_manifest(models_dir)  # a folder the fuse stage finished: refuses anything else
    deleted, freed = 0, 0
    for path in sorted(models_dir.rglob("*")):
        relpath = path.relative_to(models_dir).as_posix()
        if path.is_file() and relpath.endswith(PRUNED_SUFFIXES) and relpath not in served.files:
            freed += path.stat().st_size
            path.unlink()
            deleted += 1
    return deleted, freed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.artifacts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prune_cmd = commands.add_parser("prune", help="delete what serving never reads (the Dockerfile's build stage)")
    prune_cmd.add_argument("models_dir", type=Path, help="the models folder (bundle.json, lstm/, vgg16/, fusion/)")
    args = parser.parse_args(argv)
    try:
        deleted, freed = prune(args.models_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.models_dir}: pruned {deleted} file(s), {freed / 1e6:.1f} MB; the bundle's files are all kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
