"""Test-split evaluation of the served predictor: quality per model, latency, throughput.

Knows nothing of tracking: `evaluate` returns the figures; the stage script writes them with dvclive."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, f1_score

from product_classifier import paths
from product_classifier.inference.imagestore import ImageStore
from product_classifier.inference.labels import CLASSES
from product_classifier.inference.predictor import Predictor, Product, timed
from product_classifier.pipeline.params import Params
from product_classifier.pipeline.processed import Processed


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "f1_weighted": round(float(f1_score(y_true, y_pred, average="weighted", zero_division=0)), 6),
        "f1_macro": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 6),
    }


def percentiles(ms: list[float]) -> dict:
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p95": round(float(np.percentile(ms, 95)), 3)}


@dataclass(frozen=True)
class Evaluation:
    summary: dict  # {"fused"|"lstm"|"vgg16": scores and latency, "test_size"}
    actual: list[str]  # true and fused-predicted codes per test product (the confusion matrix)
    predicted: list[str]
    per_class: list[dict]  # {"prdtypecode", "f1", "support"} of the fused model
    predictions: pd.DataFrame  # per product, so serving can be checked against them (no skew)


def test_products(data: Processed, store: ImageStore, start: int = 0, stop: int | None = None) -> tuple[list[Product], np.ndarray]:
    """Test-split products `start:stop` as serving receives them (text and the image file's bytes, read from
    `store`: data/raw's training images), and their labels.

    A slice at a time, so that a split of any size is scored without holding its images in memory. The caller opens
    the store once: opening an archive reads its whole directory (1.7 s at the real size's 197,456 entries)."""
    rows = data.rows("test")[start:stop]
    df = data.products.iloc[rows]
    names = paths.image_names(df)
    images = store.read_many(names)
    products = [Product(r.designation, r.description, images[name]) for r, name in zip(df.itertuples(), names, strict=True)]
    return products, data.labels[rows]


def latencies(predictor: Predictor, products: list[Product], n: int) -> dict:
    """Single-item latency (ms) of each served path, raw product in, class out."""
    sample = products[:n]
    with_image = [x for x in products[: 4 * n] if predictor.prepare(x, strict_image=False).image is not None][:n]
    paths_ = {
        "fused": (sample, lambda x: predictor.predict([x], strict_image=False)),
        paths.LSTM: (sample, lambda x: predictor.predict([Product(x.designation, x.description)])),
        paths.VGG16: (with_image, lambda x: predictor.image_proba(predictor.prepare(x).image[None])),
    }
    out = {}
    for name, (items, fn) in paths_.items():
        for x in items[:3]:  # warm-up: first calls build the compiled functions
            fn(x)
        out[name] = percentiles([timed(fn, x) for x in items])
    return out


def evaluate(processed: Path, raw: Path, models: Path, p: Params, batch: int = 64) -> Evaluation:
    """Every product of the test split is scored: one without a usable image from its text, one
    without a usable word from its image (the single models count those they cannot score as wrong)."""
    predictor = Predictor.load(models)
    data = Processed(processed)
    store = ImageStore(paths.images_url(raw, "train"))
    total = len(data.rows("test"))
    preds, y_true, seconds = [], [], 0.0
    for i in range(0, total, batch):
        products, labels = test_products(data, store, i, i + batch)
        start = time.perf_counter()  # scoring only, as serving's throughput: reading the archive is not counted
        preds += predictor.predict(products, strict_image=False)
        seconds += time.perf_counter() - start
        y_true.append(labels)
    y_true = np.concatenate(y_true)
    throughput = total / seconds if seconds else 0.0

    fused = np.array([pr.probabilities.argmax() for pr in preds])
    text = np.array([pr.text.argmax() for pr in preds])
    image = np.array([pr.image.argmax() if pr.image is not None else -1 for pr in preds])
    lat = latencies(predictor, test_products(data, store, 0, 4 * p.evaluate.latency_samples)[0], p.evaluate.latency_samples)
    summary = {
        "fused": {**scores(y_true, fused), "latency_ms": lat["fused"], "throughput_per_s": round(throughput, 2)},
        paths.LSTM: {**scores(y_true, text), "latency_ms": lat[paths.LSTM]},
        paths.VGG16: {**scores(y_true, image), "latency_ms": lat[paths.VGG16]},
        "test_size": total,
        "without_image": sum(pr.image is None for pr in preds),
        "without_text": sum(not pr.has_text for pr in preds),
    }
    codes = np.asarray(CLASSES)
    report = classification_report(codes[y_true], codes[fused], labels=codes, output_dict=True, zero_division=0)
    per_class = [{"prdtypecode": str(c), "f1": round(report[str(c)]["f1-score"], 4),
                  "support": int(report[str(c)]["support"])} for c in codes]
    test = data.products.iloc[data.rows("test")][["productid", "imageid", "prdtypecode"]].copy()
    test["predicted"] = codes[fused]
    test["confidence"] = [round(pr.confidence, 6) for pr in preds]
    test["modalities"] = ["+".join(pr.modalities) for pr in preds]
    return Evaluation(summary, [str(c) for c in codes[y_true]], [str(c) for c in codes[fused]], per_class, test)
