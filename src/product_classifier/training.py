"""Training both models: one fit loop with early stopping, best checkpoint and dvclive."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from . import paths, tracking
from .atomic import atomic_path, write_json
from .backend import data_parallel, seed_everything
from .fusion import fit_fusion
from .labels import CLASSES, NUM_CLASSES
from .models import build_image_head, build_lstm, build_vgg16_base, compose
from .params import Params
from .preprocess import Processed
from .text import Vocabulary

MODEL_FILE = "model.keras"


class LiveLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to dvclive (backend-agnostic, unlike framework callbacks)."""

    def __init__(self, live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            split, metric = ("val", name[4:]) if name.startswith("val_") else ("train", name)
            if metric in ("loss", "accuracy"):
                self.live.log_metric(f"{split}/{metric}", float(value))
        self.live.next_step()


def fit(model: keras.Model, train: tuple, val: tuple, p: Params, lr: float, live) -> dict:
    """Fit with early stopping on validation loss; keep the best epoch's weights."""
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
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
                LiveLogger(live),
            ],
        ).history
        model.load_weights(best)
    epoch = int(np.argmin(history["val_loss"]))
    summary = {
        "best_epoch": epoch + 1,
        "epochs_run": len(history["val_loss"]),
        "val_loss": float(history["val_loss"][epoch]),
        "val_accuracy": float(history["val_accuracy"][epoch]),
    }
    live.summary["best"] = summary
    return summary


def _live(folder: Path, p: Params, section: dict):
    from dvclive import Live

    live = Live(dir=str(folder), dvcyaml=None, save_dvc_exp=False, report=None)
    live.log_params({"epochs": p.train.epochs, "batch_size": p.train.batch_size, "seed": p.train.seed, **section})
    return live


@data_parallel()  # every visible accelerator; with one, a plain run
def train_lstm(processed: Path, out: Path, metrics: Path, p: Params) -> dict:
    seed_everything(p.train.seed)
    data = Processed(processed)
    tr, va = data.rows("train"), data.rows("val")
    vocab = Vocabulary.load(data.vocab_path)
    model = build_lstm(vocab.size, vocab.max_len, p.train.lstm)
    with atomic_path(out, is_dir=True) as tmp_out, atomic_path(metrics, is_dir=True) as tmp_metrics:
        live = _live(tmp_metrics, p, p.train.lstm.model_dump())
        summary = fit(model, (data.tokens[tr], data.labels[tr]), (data.tokens[va], data.labels[va]),
                      p, p.train.lstm.learning_rate, live)
        live.end()
        model.save(tmp_out / MODEL_FILE)
        shutil.copyfile(data.vocab_path, tmp_out / "vocab.json")
    tracking.log_stage("train_lstm", {"train": p.train.model_dump(exclude={"vgg16"})}, metrics, [out / "vocab.json"])
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
    cache = paths.FEATURE_CACHE / f"vgg16-{feature_cache_key(data.folder / 'images.npy', p)}-{hashlib.sha256(rows.tobytes()).hexdigest()[:12]}.npy"
    if cache.exists():
        return np.load(cache)
    feats = base_features(base, data.images, rows)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.save(fh, feats)
    return feats


@data_parallel()  # every visible accelerator; with one, a plain run
def train_vgg16(processed: Path, out: Path, metrics: Path, p: Params) -> dict:
    seed_everything(p.train.seed)
    data = Processed(processed)
    base = build_vgg16_base(data.images.shape[1], p.train.vgg16.weights)
    tr, va = data.rows("train", with_image=True), data.rows("val", with_image=True)
    f_tr, f_va = cached_features(base, data, tr, p), cached_features(base, data, va, p)
    head = build_image_head(f_tr, p.train.vgg16)
    with atomic_path(out, is_dir=True) as tmp_out, atomic_path(metrics, is_dir=True) as tmp_metrics:
        live = _live(tmp_metrics, p, p.train.vgg16.model_dump())
        summary = fit(head, (f_tr, data.labels[tr]), (f_va, data.labels[va]), p, p.train.vgg16.learning_rate, live)
        live.end()
        compose(base, head).save(tmp_out / MODEL_FILE)
        write_json(tmp_out / "meta.json", {"image_size": int(data.images.shape[1]), "weights": p.train.vgg16.weights})
    tracking.log_stage("train_vgg16", {"train": p.train.model_dump(exclude={"lstm"})}, metrics, [out / "meta.json"])
    return summary


def fit_and_save_fusion(processed: Path, models: Path, out: Path, p: Params) -> dict:
    """Fit the fusion on the validation split only, and save it beside the models."""
    from .predictor import FUSION_FILE, Predictor, batched, load_single_models

    data = Processed(processed)
    predictor = Predictor(*load_single_models(models), fusion=None)
    # Fitted where it is used: products with both a usable text and a usable image.
    va, tr = data.rows("val", with_image=True, with_text=True), data.rows("train")
    p_text = batched(predictor.text_proba, data.tokens, va)
    p_image = batched(predictor.image_proba, data.images, va)
    fusion = fit_fusion(p_text, p_image, data.labels[va], p.fuse.method, seed=p.train.seed)
    mix = np.bincount(data.labels[tr], minlength=NUM_CLASSES) / len(tr)
    val_accuracy = float((fusion.combine(p_text, p_image).argmax(1) == data.labels[va]).mean())
    with atomic_path(out, is_dir=True) as tmp:
        write_json(tmp / FUSION_FILE, {
            "fusion": fusion.to_dict(),
            "classes": list(CLASSES),
            "class_mix": [round(float(m), 6) for m in mix],
            "val_accuracy": val_accuracy,
        })
    tracking.log_stage("fuse", {"fuse": p.fuse.model_dump()}, artifacts=[out])
    return {"method": fusion.method, "text_weight": fusion.text_weight, "val_accuracy": val_accuracy}
