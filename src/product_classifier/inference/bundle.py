"""What models/ serves, file by file, and the fuse stage's fusion.json read once into a typed `FusionFile`.

The one place that names the served files (serving's identity check hashes the folders they live in)."""

from __future__ import annotations

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
ONNX_FILES = (TEXT_MODEL, VOCAB, IMAGE_MODEL, IMAGE_META)
SERVED_FILES = (*ONNX_FILES, FUSION_JSON)
# The Keras models the ONNX ones were exported from: the pipeline's float reference, never served.
KERAS_FILES = (f"{paths.LSTM}/{paths.MODEL_FILE}", VOCAB, f"{paths.VGG16}/{paths.MODEL_FILE}", IMAGE_META)
FLOAT32, INT8 = "float32", "int8"  # the served image model's precision


@dataclass(frozen=True)
class FusionFile:
    """fusion.json: the fitted fusion, the image model to serve (relative to models/), the drift reference."""

    fusion: Fusion
    image_model: str
    drift_reference: dict | None


def check_files(models_dir: Path, files) -> None:
    missing = [f for f in files if not (models_dir / f).exists()]
    if missing:
        raise DataError(f"{models_dir}: missing model artifact(s) {', '.join(missing)}; run `dvc repro` or `dvc pull`")


def read_fusion(models_dir: Path) -> FusionFile:
    check_files(models_dir, (FUSION_JSON,))
    fused = read_json(models_dir / FUSION_JSON)
    return FusionFile(Fusion.from_dict(fused["fusion"]), fused.get("image_model") or IMAGE_MODEL,
                      fused.get("drift_reference"))


def image_size(models_dir: Path) -> int:
    return int(read_json(models_dir / IMAGE_META)["image_size"])


def precision(models_dir: Path, image_model: str) -> str:
    """FLOAT32 for the exported image model, INT8 for any other (the fuse stage's quantized one)."""
    return FLOAT32 if Path(models_dir, image_model) == models_dir / IMAGE_MODEL else INT8
