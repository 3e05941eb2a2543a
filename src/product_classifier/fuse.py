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
    val_accuracy = float((fusion.combine(p_text, p_image).argmax(1) == data.labels[va]).mean())
    with atomic_path(out, is_dir=True) as tmp:
        write_json(tmp / paths.FUSION_FILE, {
            "fusion": fusion.to_dict(),
            "classes": list(CLASSES),
            "class_mix": [round(float(m), 6) for m in mix],
            "val_accuracy": val_accuracy,
        })
    return {"method": fusion.method, "text_weight": fusion.text_weight, "val_accuracy": val_accuracy}
