"""The fuse stage's logic: fit the text/image combination on the validation split, save it beside the models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import paths
from .atomic import atomic_path, write_json
from .fusion import fit_fusion
from .labels import CLASSES, NUM_CLASSES
from .params import Params
from .predictor import Predictor, batched, load_onnx_steps
from .preprocess import Processed

LOW_CONFIDENCE = 0.5


def drift_reference(probabilities: np.ndarray) -> dict:
    """What serving's drift statistics compare with: the model's own *predicted* class mix on the
    validation split (so the model's bias is not called drift) and its share of low-confidence answers."""
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    return {
        "split": "val",
        "n": int(len(predicted)),
        "predicted_mix": [round(float(m), 6) for m in np.bincount(predicted, minlength=NUM_CLASSES) / len(predicted)],
        "low_confidence_threshold": LOW_CONFIDENCE,
        "low_confidence_share": round(float((confidence < LOW_CONFIDENCE).mean()), 6),
    }


def fit_and_save_fusion(processed: Path, models: Path, out: Path, p: Params) -> dict:
    """Fit the fusion on the validation split only (never on training data) and write `out/fusion.json`."""
    data = Processed(processed)
    predictor = Predictor(*load_onnx_steps(models), fusion=None)  # the served runtime's probabilities
    # Fitted where it is used: products with both a usable text and a usable image.
    va, tr = data.rows("val", with_image=True, with_text=True), data.rows("train")
    p_text = batched(predictor.text_proba, data.tokens, va)
    p_image = batched(predictor.image_proba, data.images, va)
    fusion = fit_fusion(p_text, p_image, data.labels[va], p.fuse.method, seed=p.train.seed)
    mix = np.bincount(data.labels[tr], minlength=NUM_CLASSES) / len(tr)
    fused = fusion.combine(p_text, p_image)
    val_accuracy = float((fused.argmax(1) == data.labels[va]).mean())
    with atomic_path(out, is_dir=True) as tmp:
        write_json(tmp / paths.FUSION_FILE, {
            "fusion": fusion.to_dict(),
            "classes": list(CLASSES),
            "class_mix": [round(float(m), 6) for m in mix],
            "val_accuracy": val_accuracy,
            "drift_reference": drift_reference(fused),
        })
    return {"method": fusion.method, "text_weight": fusion.text_weight, "val_accuracy": val_accuracy}
