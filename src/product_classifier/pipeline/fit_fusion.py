"""The fuse stage's logic: fit the text/image combination on the validation split, save it beside the models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from product_classifier import paths
from product_classifier.atomic import atomic_path, write_json
from product_classifier.inference import bundle
from product_classifier.inference.fusion import Fusion, fit_fusion
from product_classifier.inference.labels import NUM_CLASSES
from product_classifier.inference.predictor import Predictor, load_onnx, map_rows
from product_classifier.inference.runtime import Forward
from product_classifier.pipeline.params import Params, QuantizeParams
from product_classifier.pipeline.processed import Processed

DECIMALS = 6  # of the figures in the stage's metrics


def drift_reference(probabilities: np.ndarray, low_confidence: float) -> dict:
    """What serving's drift statistics compare with: the model's own *predicted* class mix on the
    validation split (so the model's bias is not called drift) and its share of answers under `low_confidence`."""
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    return {
        "split": "val",
        "n": int(len(predicted)),
        "predicted_mix": [round(float(m), 6) for m in np.bincount(predicted, minlength=NUM_CLASSES) / len(predicted)],
        "low_confidence_threshold": low_confidence,
        "low_confidence_share": round(float((confidence < low_confidence).mean()), 6),
    }


def weighted_f1(labels: np.ndarray, probabilities: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, probabilities.argmax(1), average="weighted", zero_division=0))


def calibration_images(data: Processed, size: int, seed: int) -> np.ndarray:
    """A seeded sample of `size` training images (those with a usable image): the INT8 calibration batch."""
    rows = data.rows("train", with_image=True)
    picked = np.sort(np.random.default_rng(seed).choice(rows, size=min(size, len(rows)), replace=False))
    return np.asarray(data.images[picked])


def quantize_image(data: Processed, models: Path, out_file: Path, q: QuantizeParams, seed: int) -> None:
    """The served float image model quantized to INT8 into `out_file`, calibrated on `calibration_images`
    (the fuse stage's candidate; the benchmarks build the same one)."""
    from product_classifier.pipeline.quantize import quantize_image_model

    quantize_image_model(models / paths.VGG16 / paths.ONNX_FILE, out_file,
                         calibration_images(data, q.calibration_size, seed))


def served_probabilities(fusion: Fusion, p_text: np.ndarray, image_forward: Forward, images: np.ndarray,
                         rows: np.ndarray) -> np.ndarray:
    """The fused probabilities of `rows` when `image_forward` is the served image model (same fusion, same text)."""
    p_image = np.asarray(map_rows(image_forward, images, rows), dtype=np.float64)
    return fusion.combine(p_text, p_image)


def int8_gate(float_f1: float, int8_f1: float, agreement: float, max_f1_drop: float,
              min_agreement: float) -> tuple[bool, str]:
    """Whether the INT8 image model may be served, and why; the bounds themselves pass. The figures are
    compared as the metrics report them (6 decimals): bounds copied from the metrics hold, and a drop of
    0.9 - 0.89 is 0.01, not 0.010000000000000009."""
    drop, agreement = round(float_f1 - int8_f1, DECIMALS), round(agreement, DECIMALS)
    figures = f"fused val F1 drop {drop:.4f}"
    if drop > max_f1_drop:
        return False, f"{figures} > {max_f1_drop:g} (agreement {agreement:.1%})"
    if agreement < min_agreement:
        return False, f"agreement with the float model {agreement:.1%} < {min_agreement:.1%} ({figures})"
    return True, f"{figures} <= {max_f1_drop:g}, agreement {agreement:.1%} >= {min_agreement:.1%}"


def gate_int8_model(data: Processed, models: Path, out_file: Path, fusion: Fusion, p_text: np.ndarray,
                    float_fused: np.ndarray, rows: np.ndarray, q: QuantizeParams, seed: int) -> tuple[dict, np.ndarray]:
    """Quantize the image model into `out_file`, score the fused validation predictions it gives and keep
    the file only if the gate accepts it (refused: the file is deleted and one warning line says why).
    Returns the gate's figures and the fused validation probabilities with the INT8 image model."""
    from product_classifier.inference.runtime import onnx_forward

    quantize_image(data, models, out_file, q, seed)
    int8_fused = served_probabilities(fusion, p_text, onnx_forward(out_file), data.images, rows)
    labels = data.labels[rows]
    float_f1, int8_f1 = weighted_f1(labels, float_fused), weighted_f1(labels, int8_fused)
    agreement = float((int8_fused.argmax(1) == float_fused.argmax(1)).mean())
    accepted, reason = int8_gate(float_f1, int8_f1, agreement, q.max_f1_drop, q.min_agreement)
    if not accepted:
        out_file.unlink()
        print(f"warning: INT8 image model refused: {reason}; the float model is served", file=sys.stderr, flush=True)
    return {"val_f1_weighted": round(int8_f1, DECIMALS), "f1_drop": round(float_f1 - int8_f1, DECIMALS),
            "agreement": round(agreement, DECIMALS), "accepted": accepted}, int8_fused


def fit_and_save_fusion(processed: Path, models: Path, p: Params) -> dict:
    """Fit the fusion on the validation split only (never on training data) and write `models/fusion/fusion.json`;
    with `quantize.int8`, also the INT8 image model if it passes the gate (named in fusion.json). Then
    `models/bundle.json`, the served files' manifest (inference/bundle.py).

    Returns the validation figures (the stage's metrics): fused weighted F1 and accuracy of the float
    models, and with `quantize.int8` those of the INT8 image model under `int8`."""
    data = Processed(processed)
    predictor = Predictor(load_onnx(models), fusion=None)  # the served runtime's probabilities
    # Fitted where it is used: products with both a usable text and a usable image.
    va = data.rows("val", with_image=True, with_text=True)
    p_text = map_rows(predictor.text_proba, data.tokens, va)
    p_image = map_rows(predictor.image_proba, data.images, va)
    fusion = fit_fusion(p_text, p_image, data.labels[va], p.fuse.method, seed=p.train.seed)
    fused = fusion.combine(p_text, p_image)
    val_accuracy = float((fused.argmax(1) == data.labels[va]).mean())
    figures = {"method": fusion.method, "text_weight": fusion.text_weight,
               "val_f1_weighted": round(weighted_f1(data.labels[va], fused), DECIMALS),
               "val_accuracy": round(val_accuracy, DECIMALS)}
    served, served_fused = {}, fused
    with atomic_path(models / paths.FUSION, is_dir=True) as tmp:
        if p.quantize.int8:
            figures["int8"], int8_fused = gate_int8_model(data, models, tmp / paths.INT8_IMAGE_FILE, fusion, p_text,
                                                          fused, va, p.quantize, p.train.seed)
            if figures["int8"]["accepted"]:
                served, served_fused = {"image_model": paths.INT8_IMAGE_MODEL}, int8_fused
        write_json(tmp / paths.FUSION_FILE, {
            "fusion": fusion.to_dict(),
            "drift_reference": drift_reference(served_fused, p.fuse.low_confidence),  # what the served model predicts
            **served,
        })
    write_json(models / paths.BUNDLE_FILE, bundle.manifest(models))  # last: what serving checks the files against
    return figures
