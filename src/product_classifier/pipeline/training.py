"""Training both models: one fit loop with early stopping and the best epoch's weights restored.

Knows nothing of tracking: a stage script passes `on_epoch(epoch, logs)` to see each epoch's metrics
and records the returned summary (the best epoch's metrics, those of the saved model) itself.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from product_classifier import paths
from product_classifier.atomic import atomic_path, write_json
from product_classifier.inference.text import Vocabulary
from product_classifier.pipeline.backend import data_parallel, seed_everything
from product_classifier.pipeline.export import export_onnx, save_keras
from product_classifier.pipeline.models import build_image_head, build_lstm, build_vgg16_base, compose
from product_classifier.pipeline.params import Params
from product_classifier.pipeline.processed import Processed

# Called after each epoch with {"train": {"loss", "accuracy"}, "val": {...}}.
EpochHook = Callable[[int, dict[str, dict[str, float]]], None]
TRACKED = ("loss", "accuracy")


def split_logs(logs: dict) -> dict[str, dict[str, float]]:
    """One epoch's Keras logs as {"train": {"loss", "accuracy"}, "val": {...}}."""
    out: dict[str, dict[str, float]] = {"train": {}, "val": {}}
    for name, value in logs.items():
        split, metric = ("val", name[4:]) if name.startswith("val_") else ("train", name)
        if metric in TRACKED:
            out[split][metric] = float(value)
    return out


def fit(model: keras.Model, train: tuple, val: tuple, p: Params, lr: float, on_epoch: EpochHook | None = None) -> dict:
    """Fit with early stopping on validation loss and keep the best epoch's weights.

    Returns `best` (`best_epoch`, 1-based, and `epochs_run`) and the best epoch's `train` and `val`
    metrics: those of the model that is kept, not of the last epoch run."""
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hooks = [keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e, split_logs(logs or {})))] if on_epoch else []
    with tempfile.TemporaryDirectory() as tmp:
        best = Path(tmp) / "best.weights.h5"
        history = model.fit(
            *train,
            validation_data=val,
            epochs=p.train.epochs,
            batch_size=p.train.batch_size,
            shuffle=True,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[
                keras.callbacks.EarlyStopping("val_loss", patience=p.train.patience),
                keras.callbacks.ModelCheckpoint(best, "val_loss", save_best_only=True, save_weights_only=True),
                *hooks,
            ],
        ).history
        model.load_weights(best)
    epoch = int(np.argmin(history["val_loss"]))
    return {
        "best": {"best_epoch": epoch + 1, "epochs_run": len(history["val_loss"])},
        **split_logs({name: values[epoch] for name, values in history.items()}),
    }


@data_parallel()  # every visible accelerator; with one, a plain run
def train_lstm(processed: Path, out: Path, p: Params, on_epoch: EpochHook | None = None) -> dict:
    seed_everything(p.train.seed)
    data = Processed(processed)
    tr, va = data.rows("train"), data.rows("val")
    vocab = Vocabulary.load(data.vocab_path)
    model = build_lstm(vocab.size, vocab.max_len, p.train.lstm)
    with atomic_path(out, is_dir=True) as tmp_out:
        summary = fit(model, (data.tokens[tr], data.labels[tr]), (data.tokens[va], data.labels[va]),
                      p, p.train.lstm.learning_rate, on_epoch)
        save_keras(model, tmp_out / paths.MODEL_FILE)
        export_onnx(model, tmp_out / paths.ONNX_FILE, data.tokens[va[:64]])
        shutil.copyfile(data.vocab_path, tmp_out / paths.VOCAB_FILE)
    return summary


def feature_cache_key(images: Path, p: Params) -> str:
    """Frozen-base features depend only on the image array and the base's weights."""
    st = images.stat()
    spec = f"{images.resolve()}|{st.st_size}|{st.st_mtime_ns}|{p.train.vgg16.weights}|{p.train.seed}|{keras.__version__}|{keras.backend.backend()}"
    return hashlib.sha256(spec.encode()).hexdigest()[:20]


def base_features(base: keras.Model, images: np.ndarray, rows: np.ndarray, batch: int = 128) -> np.ndarray:
    """Run the frozen base over memory-mapped images, one batch in RAM at a time."""
    out = []
    for start in range(0, len(rows), batch):
        out.append(np.asarray(base.predict_on_batch(np.asarray(images[rows[start : start + batch]]))))
    return np.concatenate(out) if out else np.zeros((0, base.output_shape[-1]), "float32")


def cached_features(base: keras.Model, data: Processed, rows: np.ndarray, p: Params) -> np.ndarray:
    key = feature_cache_key(data.folder / paths.IMAGES_FILE, p)
    cache = paths.FEATURE_CACHE / f"{paths.VGG16}-{key}-{hashlib.sha256(rows.tobytes()).hexdigest()[:12]}.npy"
    if cache.exists():
        return np.load(cache)
    feats = base_features(base, data.images, rows)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.save(fh, feats)
    return feats


@data_parallel()  # every visible accelerator; with one, a plain run
def train_vgg16(processed: Path, out: Path, p: Params, on_epoch: EpochHook | None = None) -> dict:
    seed_everything(p.train.seed)
    data = Processed(processed)
    base = build_vgg16_base(data.images.shape[1], p.train.vgg16.weights)
    tr, va = data.rows("train", with_image=True), data.rows("val", with_image=True)
    f_tr, f_va = cached_features(base, data, tr, p), cached_features(base, data, va, p)
    head = build_image_head(f_tr, p.train.vgg16)
    with atomic_path(out, is_dir=True) as tmp_out:
        summary = fit(head, (f_tr, data.labels[tr]), (f_va, data.labels[va]), p, p.train.vgg16.learning_rate, on_epoch)
        model = compose(base, head)
        save_keras(model, tmp_out / paths.MODEL_FILE)
        export_onnx(model, tmp_out / paths.ONNX_FILE, np.asarray(data.images[va[:16]], "float32"))
        write_json(tmp_out / paths.META_FILE, {"image_size": int(data.images.shape[1]), "weights": p.train.vgg16.weights})
    return summary
