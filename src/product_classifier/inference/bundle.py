"""The served bundle: `models/bundle.json`, which the fuse stage writes last, lists every file serving runs with its
sha256 and the version they make; `load` checks them once and returns one typed `Bundle` (with fusion.json's
fusion, image model and drift reference, and the image size) that serving, `evaluate` and batch scoring load from.

The one place that names the served files. dvc.lock records bundle.json's md5 (a file out of the fuse stage), so
serving ties the models to a pipeline run by comparing one file's md5 (serving/artifacts.py), with no knowledge of
DVC's own directory hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from product_classifier import paths
from product_classifier.atomic import read_json
from product_classifier.errors import DataError
from product_classifier.inference.fusion import Fusion

TEXT_MODEL = f"{paths.LSTM}/{paths.ONNX_FILE}"
VOCAB = f"{paths.LSTM}/{paths.VOCAB_FILE}"
IMAGE_MODEL = f"{paths.VGG16}/{paths.ONNX_FILE}"  # the float32 one; fusion.json may name the INT8 one instead
IMAGE_META = f"{paths.VGG16}/{paths.META_FILE}"
FUSION_JSON = f"{paths.FUSION}/{paths.FUSION_FILE}"
# The Keras models the ONNX ones were exported from: the pipeline's float reference, never served.
KERAS_FILES = (f"{paths.LSTM}/{paths.MODEL_FILE}", VOCAB, f"{paths.VGG16}/{paths.MODEL_FILE}", IMAGE_META)
FLOAT32, INT8 = "float32", "int8"  # the served image model's precision
SHA256 = re.compile(r"[0-9a-f]{64}")
FIX = "run `dvc repro` or `dvc pull`"


@dataclass(frozen=True)
class Manifest:
    """bundle.json itself: the served files (relative to models/) with their sha256, and the version they make."""

    models_dir: Path
    version: str
    files: dict[str, str]
    md5: str  # of bundle.json's bytes: what dvc.lock records for it


@dataclass(frozen=True)
class Bundle:
    """What models/ serves: the manifest, and what the fuse stage fitted (the fusion, which image model runs,
    the drift reference), with the image size the models expect."""

    manifest: Manifest
    fusion: Fusion
    image_model: str
    image_size: int
    drift_reference: dict | None

    @property
    def models_dir(self) -> Path:
        return self.manifest.models_dir

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def files(self) -> dict[str, str]:
        return self.manifest.files


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def version_of(files: dict[str, str]) -> str:
    """Short, stable id of the served files' hashes: changes whenever any served file does."""
    return hashlib.sha256(",".join(f"{rel}={files[rel]}" for rel in sorted(files)).encode()).hexdigest()[:12]


def image_model_of(fused: dict) -> str:
    """The image model fusion.json names (the INT8 one when the fuse stage's gate accepted it), else the float one."""
    return fused.get("image_model") or IMAGE_MODEL


def manifest(models_dir: Path) -> dict:
    """bundle.json's content for the models now in `models_dir` (the fuse stage writes it once fusion.json is):
    the files serving runs, the image model as fusion.json names it."""
    check_files(models_dir, (FUSION_JSON,))
    served = (TEXT_MODEL, VOCAB, image_model_of(read_json(models_dir / FUSION_JSON)), IMAGE_META, FUSION_JSON)
    check_files(models_dir, served)  # all missing ones named, before any is hashed
    files = {rel: file_sha256(models_dir / rel) for rel in served}
    return {"version": version_of(files), "files": files}


def check_files(models_dir: Path, files) -> None:
    missing = [f for f in files if not (models_dir / f).exists()]
    if missing:
        raise DataError(f"{models_dir}: missing model artifact(s) {', '.join(missing)}; {FIX}")


def _parse(path: Path, raw: bytes) -> tuple[str, dict[str, str]]:
    try:
        found = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        why = f"not JSON: {str(exc).splitlines()[0]}"
    else:
        files = found.get("files") if isinstance(found, dict) else None
        if not (isinstance(files, dict) and files and all(
                isinstance(rel, str) and rel and not rel.startswith("/") and ".." not in rel.split("/")
                and isinstance(sha, str) and SHA256.fullmatch(sha) for rel, sha in files.items())):
            why = 'not {"version": ..., "files": {relpath: sha256}}'
        elif found.get("version") != version_of(files):
            why = f"its version {found.get('version')!r} is not that of its files ({version_of(files)})"
        else:
            return found["version"], files
    raise DataError(f"{path}: corrupt bundle manifest ({why}); {FIX}")


def read_manifest(models_dir: str | Path) -> Manifest:
    """models_dir's bundle.json, parsed and checked for shape; every listed file present (all missing ones named)."""
    models_dir = Path(models_dir)
    path = models_dir / paths.BUNDLE_FILE
    check_files(models_dir, (paths.BUNDLE_FILE,))
    raw = path.read_bytes()
    version, files = _parse(path, raw)
    check_files(models_dir, files)
    return Manifest(models_dir, version, files, hashlib.md5(raw).hexdigest())


def check_hashes(manifest: Manifest) -> None:
    """Hash every served file once; DataError naming the first that differs from the manifest."""
    for rel, want in manifest.files.items():
        got = file_sha256(manifest.models_dir / rel)
        if got != want:
            raise DataError(f"{manifest.models_dir / rel}: sha256 {got[:16]}..., {manifest.models_dir / paths.BUNDLE_FILE} "
                            f"records {want[:16]}...: changed after the pipeline wrote it; {FIX}")


def load(models_dir: str | Path, verify: bool = True) -> Bundle:
    """models_dir's bundle, typed. `verify`: hash every served file once first (serving does at startup; a second
    reader of a folder already checked passes False)."""
    manifest = read_manifest(models_dir)
    if verify:
        check_hashes(manifest)
    fusion_file = manifest.models_dir / FUSION_JSON
    try:
        fused = read_json(fusion_file)
        fusion = Fusion.from_dict(fused["fusion"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{fusion_file}: not the fuse stage's fusion file ({type(exc).__name__}: {exc}); {FIX}") from None
    image_model = image_model_of(fused)
    if image_model not in manifest.files:
        raise DataError(f"{manifest.models_dir / paths.BUNDLE_FILE} does not list {image_model}, the image model "
                        f"{FUSION_JSON} names; {FIX}")
    return Bundle(manifest, fusion, image_model, image_size(manifest.models_dir), fused.get("drift_reference"))


def image_size(models_dir: Path) -> int:
    return int(read_json(models_dir / IMAGE_META)["image_size"])


def precision(models_dir: Path, image_model: str) -> str:
    """FLOAT32 for the exported image model, INT8 for any other (the fuse stage's quantized one)."""
    return FLOAT32 if Path(models_dir, image_model) == models_dir / IMAGE_MODEL else INT8
