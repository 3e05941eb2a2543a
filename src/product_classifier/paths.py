"""Repository layout, relative to the working directory (the repo root for stages)."""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
PROCESSED = Path("data/processed")
MODELS = Path("models")
METRICS = Path("metrics")
FEATURE_CACHE = Path(".cache/features")
DOWNLOAD_CACHE = Path(".cache/downloads")

X_TRAIN = "X_train_update.csv"
Y_TRAIN = "Y_train_CVw08PX.csv"
X_TEST = "X_test_update.csv"
SPLITS = ("train", "val", "test")


def image_dir(raw: Path, split: str = "train") -> Path:
    """Where the images are laid out (`images/image_train/...`), whatever the archive's layout."""
    return raw / "images" / f"image_{split}"


def image_name(imageid: int, productid: int) -> str:
    return f"image_{imageid}_product_{productid}.jpg"
