"""The model service: the one loaded Predictor, its identity, and the single function that calls the model."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from product_classifier.labels import INDEX
from product_classifier.predictor import Prediction, Predictor, Prepared, Product

from .artifacts import ModelIdentity, verify_artifacts
from .drift import DriftWindow
from .metrics import ModelMetrics

log = logging.getLogger("serving")


class ModelService:
    """Loaded once at startup. `run_prediction` is the only place the model runs (a micro-batcher slots in there)."""

    def __init__(self, predictor: Predictor, identity: ModelIdentity, metrics: ModelMetrics, drift_window: int):
        self.predictor = predictor
        self.identity = identity
        self.metrics = metrics
        self._lock = threading.Lock()  # one forward pass at a time, whichever thread calls (Keras models share state)
        self.drift = DriftWindow(predictor.class_mix, drift_window) if predictor.class_mix else None
        metrics.info.labels(version=identity.version).set(1)

    @classmethod
    def load(cls, models_dir: Path, lock_path: Path | None, metrics: ModelMetrics, drift_window: int,
             loader=Predictor.load) -> ModelService:
        """Raises DataError when an artifact is missing or does not match dvc.lock."""
        identity = verify_artifacts(models_dir, lock_path)
        start = time.perf_counter()
        predictor = loader(models_dir)
        log.info("model %s loaded from %s in %.1f s", identity.version, models_dir, time.perf_counter() - start)
        return cls(predictor, identity, metrics, drift_window)

    @property
    def version(self) -> str:
        return self.identity.version

    def prepare(self, product: Product) -> Prepared:
        """The shared preprocessing (raises ImageError for an unreadable image)."""
        with self.metrics.inference_seconds.labels(stage="preprocess").time():
            return self.predictor.prepare(product)

    def run_prediction(self, prepared_items: Sequence[Prepared]) -> list[Prediction]:
        """One forward pass for all items (the micro-batcher's group), and the model metrics."""
        if not prepared_items:
            return []
        with self._lock, self.metrics.inference_seconds.labels(stage="model").time():
            predictions = self.predictor.predict_prepared(list(prepared_items))
        for p in predictions:
            self.metrics.predictions.labels(prdtypecode=str(p.code)).inc()
            self.metrics.confidence.observe(p.confidence)
        if self.drift is not None:
            self.metrics.drift.set(self.drift.add(INDEX[p.code] for p in predictions))
        return predictions

