"""Repository layout, relative to the working directory (the repo root for stages), the root itself (`repo_root`),
and where Keras keeps weights."""

from __future__ import annotations

import os
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
IMAGE_ARCHIVE = "images.zip"  # every image (image_train/, image_test/), read in place: imagestore.py
SPLITS = ("train", "val", "test")

# data/processed/ files
PRODUCTS_FILE = "products.csv"
IMAGES_FILE = "images.npy"
TOKENS_FILE = "tokens.npy"
LABELS_FILE = "labels.npy"
VOCAB_FILE = "vocab.json"

# models/<model>/ folders and files; the folder names are also the model names in metrics
LSTM, VGG16, FUSION = "lstm", "vgg16", "fusion"
MODEL_DIRS = (LSTM, VGG16, FUSION)
MODEL_FILE = "model.keras"
ONNX_FILE = "model.onnx"  # the same model exported for serving (ONNX Runtime, no TensorFlow)
META_FILE = "meta.json"
FUSION_FILE = "fusion.json"
BUNDLE_FILE = "bundle.json"  # models/bundle.json: the served files and their sha256 (inference/bundle.py)
INT8_IMAGE_FILE = "image.int8.onnx"  # the fuse stage's INT8 image model (quantize.int8), if its gate accepts it
INT8_IMAGE_MODEL = f"{FUSION}/{INT8_IMAGE_FILE}"  # as fusion.json's `image_model` names it: relative to models/

# metrics/<stage>/ and batch scoring
METRICS_FILE = "metrics.json"
EVALUATION = METRICS / "evaluate"  # the evaluate stage's metrics, which serving reports too
PREDICTIONS_FILE = "predictions.csv"
PREDICTIONS = Path("data/predictions")

# Outside the repository: Keras's cache of pretrained weights (`make weights` installs the ImageNet file there).
IMAGENET_NOTOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + IMAGENET_NOTOP
# As published in keras.applications.vgg16 (`file_hash`, an md5); tests/pipeline/test_weights.py checks that the installed
# Keras still names it. Keras publishes no sha256 for this file.
IMAGENET_MD5 = "6d6bbae143d832006294945121d1f1fc"
IMAGENET_BYTES = 58_889_256


# Where `dvc exp run --queue` / `--temp` runs an experiment: a throw-away copy under the real root.
EXPS_TMP = (".dvc", "tmp", "exps")


def repo_root(cwd: Path | None = None, env: dict[str, str] | None = None) -> Path:
    """The repository the user works in, wherever the stage runs.

    DVC sets `DVC_ROOT` for every stage command, and for queued experiments points it at the parent
    repository, not at the executor's copy in `.dvc/tmp/exps/`. Without DVC (a stage run by hand): the
    nearest folder above `cwd` holding `.dvc` or `.git`, leaving any `.dvc/tmp/exps/` copy; else `cwd`."""
    env = os.environ if env is None else env
    start = Path(env.get("DVC_ROOT") or cwd or Path.cwd()).resolve()
    parts = start.parts
    for i in range(len(parts) - len(EXPS_TMP) + 1):
        if parts[i : i + len(EXPS_TMP)] == EXPS_TMP:
            return Path(*parts[:i])
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir() or (folder / ".git").exists():
            return folder
    return start


def keras_home() -> Path:
    """Keras's cache folder, as `keras.utils.get_file` picks it: KERAS_HOME, else ~/.keras (Keras does not export
    its own `keras_home`; tests/pipeline/test_weights.py checks that Keras finds the file there)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def imagenet_weights() -> Path:
    """Where Keras looks for VGG16's ImageNet file (`train.vgg16.weights: imagenet`)."""
    return keras_home() / "models" / IMAGENET_NOTOP


def image_member(split: str, imageid: int, productid: int) -> str:
    """A product's image inside data/raw's archive."""
    return f"image_{split}/{image_name(imageid, productid)}"


def images_url(raw: Path, split: str = "train") -> str:
    """The `split`'s images in data/raw's archive, as an fsspec URL (`imagestore.ImageStore` reads it)."""
    return f"zip://image_{split}::{(Path(raw) / IMAGE_ARCHIVE).resolve()}"


def image_name(imageid: int, productid: int) -> str:
    return f"image_{imageid}_product_{productid}.jpg"


def image_names(products) -> list[str]:
    """The image file name of each row of a frame with `imageid` and `productid` columns, in order."""
    return [image_name(i, p) for i, p in zip(products["imageid"], products["productid"], strict=True)]
