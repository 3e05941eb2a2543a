"""The served model's identity: its artifacts checked against `dvc.lock`, and a version derived from it.

DVC records a directory out as `md5: <hash>.dir`, where <hash> is the md5 of the JSON list of
`{"md5": <file md5>, "relpath": <path inside the directory>}` entries sorted by relpath.

`python -m serving.artifacts prune MODELS_DIR` (the image build runs it) deletes what serving never reads,
the Keras models (serving runs their ONNX exports), after recording every file's md5 in
MODELS_DIR/manifest.json; the check then takes a pruned file's md5 from there, so the identity stays DVC's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from product_classifier import paths
from product_classifier.atomic import write_json
from product_classifier.errors import DataError, UserError

LOCK_FILE = "dvc.lock"
# In MODELS_DIR itself, beside the model directories: their DVC hashes never include it.
MANIFEST_FILE = "manifest.json"
PRUNED_SUFFIXES = (".keras",)  # what serving never reads: it runs each model's ONNX export (paths.ONNX_FILE)
MD5 = re.compile(r"[0-9a-f]{32}")


def file_md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def dir_md5(entries: list[dict]) -> str:
    """DVC's directory hash of `[{"md5", "relpath"}, ...]` (pure: no files read)."""
    ordered = sorted(({"md5": e["md5"], "relpath": e["relpath"]} for e in entries), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(ordered, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def present_files(folder: Path) -> dict[str, str]:
    """{relpath: md5} of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): file_md5(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def is_pruned(relpath: str) -> bool:
    return relpath.endswith(PRUNED_SUFFIXES)


def directory_files(folder: Path, recorded: dict[str, str] | None = None, manifest: Path | None = None) -> dict[str, str]:
    """{relpath: md5} of the directory as DVC made it: its files, plus the pruned ones `recorded` in `manifest`.

    A present file must have the md5 recorded for it; a recorded file serving reads must be present."""
    files = present_files(folder)
    for relpath, md5 in (recorded or {}).items():
        if relpath in files:
            if files[relpath] != md5:
                raise DataError(f"{folder / relpath}: changed after pruning (md5 {files[relpath]}, {manifest} records "
                                f"{md5}); rebuild the image or mount models from `dvc pull`")
        elif is_pruned(relpath):
            files[relpath] = md5
        else:
            raise DataError(f"{folder / relpath}: missing although {manifest} lists it (pruning removes only "
                            f"{', '.join(PRUNED_SUFFIXES)} files); run `dvc pull` or `dvc repro`")
    return files


def directory_hash(folder: Path, recorded: dict[str, str] | None = None, manifest: Path | None = None) -> str:
    files = directory_files(folder, recorded, manifest)
    return dir_md5([{"md5": md5, "relpath": relpath} for relpath, md5 in files.items()])


def read_manifest(models_dir: Path) -> tuple[Path, dict[str, dict[str, str]]] | None:
    """(path, {model: {relpath: md5}}) of MODELS_DIR's prune manifest, None without one; DataError if corrupt."""
    path = models_dir / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        models = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = f"not JSON: {str(exc).splitlines()[0]}"
    else:
        models = models.get("models") if isinstance(models, dict) else None
        why = None if _valid_manifest(models) else 'not {"models": {model: {relpath: md5}}}'
    if why:
        raise DataError(f"{path}: corrupt prune manifest ({why}); rebuild the image, or serve models from "
                        "`dvc pull` without it")
    return path, models


def _valid_manifest(models: object) -> bool:
    return isinstance(models, dict) and all(
        isinstance(files, dict) and all(
            isinstance(rel, str) and rel and not rel.startswith("/") and ".." not in rel.split("/")
            and isinstance(md5, str) and MD5.fullmatch(md5) for rel, md5 in files.items())
        for files in models.values())


def prune(models_dir: Path) -> tuple[int, int]:
    """Record every model file's md5 in MODELS_DIR/manifest.json, then delete those serving never reads.

    Returns (files deleted, bytes freed). Run again, it keeps what an earlier run recorded."""
    found = read_manifest(models_dir)
    manifest, earlier = found if found else (models_dir / MANIFEST_FILE, {})
    models = {}
    for name in paths.MODEL_DIRS:
        folder = models_dir / name
        if not folder.is_dir():
            raise DataError(f"{folder}: missing model artifact directory; run `dvc repro` or `dvc pull`")
        models[name] = dict(sorted(directory_files(folder, earlier.get(name), manifest).items()))
    write_json(manifest, {"models": models})  # before deleting anything: an interrupted prune still verifies
    deleted, freed = 0, 0
    for name, files in models.items():
        for relpath in files:
            path = models_dir / name / relpath
            if is_pruned(relpath) and path.is_file():
                freed += path.stat().st_size
                path.unlink()
                deleted += 1
    return deleted, freed


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
    manifest, recorded = read_manifest(models_dir) or (None, {})
    for name, want in expected.items():
        folder = models_dir / name
        if not folder.is_dir():
            raise DataError(f"{folder}: missing model artifact directory; run `dvc repro` or `dvc pull`")
        got = directory_hash(folder, recorded.get(name), manifest)
        if got != want:
            raise DataError(f"{folder} does not match {lock_path} (hash {got}, locked {want}): "
                            "the models and dvc.lock come from different runs; run `dvc pull` or `dvc repro`")
    return ModelIdentity(model_version(expected), expected, lock_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.artifacts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prune_cmd = commands.add_parser("prune", help="delete what serving never reads (the Dockerfile's build stage)")
    prune_cmd.add_argument("models_dir", type=Path, help="the models folder (lstm/, vgg16/, fusion/)")
    args = parser.parse_args(argv)
    try:
        deleted, freed = prune(args.models_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.models_dir}: pruned {deleted} file(s), {freed / 1e6:.1f} MB; "
          f"their md5 in {args.models_dir / MANIFEST_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
