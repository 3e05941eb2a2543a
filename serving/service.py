"""The model service: the one loaded Predictor, its identity, and the single function that calls the model."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from product_classifier.errors import DataError
from product_classifier.inference.labels import INDEX
from product_classifier.inference.predictor import Prediction, Predictor, Prepared, Product

from .artifacts import ModelIdentity, verify_artifacts
from .drift import DriftWindow
from .metrics import ModelMetrics, presence
from .microbatch import Overloaded

log = logging.getLogger("serving")
DECODE_WAIT_SECONDS = 10  # a request that waits longer for a decode slot is answered 503


class ModelService:
    """Loaded once at startup. `run_prediction` is the only place the model runs (a micro-batcher slots in there)."""

    def __init__(self, predictor: Predictor, identity: ModelIdentity, metrics: ModelMetrics,
                 drift: DriftWindow | None = None, role: str = "champion", decodes: threading.Semaphore | None = None):
        """`decodes`: the slots for image decoding (MAX_CONCURRENT_DECODES), shared by every model of the process."""
        self.predictor = predictor
        self.decodes = decodes or threading.BoundedSemaphore(1)
        self.identity = identity
        self.metrics = metrics
        self.role = role
        self._lock = threading.Lock()  # one forward pass at a time, whichever thread calls (each already uses INFERENCE_THREADS cores)
        self.drift = drift
        self._labels = metrics.serve(role, identity.version)
        if drift is not None:
            metrics.drift.set_function(lambda: drift.stats().score)
            metrics.drift_p_value.set_function(lambda: drift.stats().p_value)
            metrics.drift_predictions.set_function(lambda: drift.stats().predictions)
            metrics.low_confidence.set_function(lambda: drift.stats().low_confidence_share)

    @classmethod
    def load(cls, models_dir: Path, lock_path: Path | None, metrics: ModelMetrics, drift_settings=None,
             loader=Predictor.load, role: str = "champion", decodes: threading.Semaphore | None = None,
             identity: ModelIdentity | None = None) -> ModelService:
        """Raises DataError when an artifact is missing or does not match dvc.lock or the bundle. `identity`: the
        models' tie to dvc.lock already checked (`python -m serving` does it before starting the server).

        `drift_settings` (DRIFT_WINDOW, DRIFT_WINDOW_SECONDS, DRIFT_MIN_SAMPLES) turns the drift statistics on
        when the models carry a drift reference (the fuse stage writes it)."""
        start = time.perf_counter()
        if identity is None:
            identity = verify_artifacts(models_dir, lock_path, hash_files=False)
            predictor = loader(models_dir)  # Predictor.load hashes every served file, once
        else:  # checked and hashed by `python -m serving` before the server started
            predictor = loader(models_dir, verify=False)
        if predictor.bundle is not None and predictor.bundle.version != identity.version:
            raise DataError(f"{models_dir}: the models changed while serving started (checked {identity.version}, "
                            f"loaded {predictor.bundle.version}); start again")
        log.info("%s model %s loaded from %s in %.1f s", role, identity.version, models_dir, time.perf_counter() - start)
        drift = None
        reference = predictor.drift_reference
        if reference and drift_settings is not None:
            drift = DriftWindow(reference["predicted_mix"], drift_settings.drift_window_seconds,
                                drift_settings.drift_window, drift_settings.drift_min_samples,
                                reference["low_confidence_threshold"])
            metrics.low_confidence_reference.set(reference["low_confidence_share"])
        elif drift_settings is not None:
            log.warning("no drift reference in %s (rerun the fuse stage): drift statistics are off", models_dir)
        return cls(predictor, identity, metrics, drift, role, decodes)

    @property
    def version(self) -> str:
        return self.identity.version

    def prepare(self, product: Product, count_input: bool = True, decoded: Prepared | None = None) -> Prepared:
        """The shared preprocessing (raises ImageError for an unreadable image), and the input metrics
        (`count_input` false for a shadow prediction: the champion counted that product already).

        An image is decoded in one of the process's `decodes` slots (Overloaded when none frees up in
        DECODE_WAIT_SECONDS); `decoded`: another model's preprocessing of the same product at this model's
        image size (the champion's, in shadow mode), whose image is taken instead of decoding it again."""
        with self.metrics.inference_seconds.labels(stage="preprocess", **self._labels).time():
            if decoded is not None:
                prepared = replace(self.predictor.prepare(replace(product, image=None)), image=decoded.image)
            elif product.image is None:
                prepared = self.predictor.prepare(product)
            else:
                if not self.decodes.acquire(timeout=DECODE_WAIT_SECONDS):
                    raise Overloaded(f"no image decode slot free for {DECODE_WAIT_SECONDS} s")
                try:
                    prepared = self.predictor.prepare(product)
                finally:
                    self.decodes.release()
        if not count_input:
            return prepared
        description = (product.description or "").strip()
        self.metrics.input_text_chars.observe(len(product.designation or "") + len(description))
        self.metrics.inputs.labels(description=presence(description), image=presence(prepared.image is not None)).inc()
        return prepared

    def run_prediction(self, prepared_items: Sequence[Prepared]) -> list[Prediction]:
        """One forward pass for all items (the micro-batcher's group), and the model metrics."""
        if not prepared_items:
            return []
        with self._lock, self.metrics.inference_seconds.labels(stage="model", **self._labels).time():
            predictions = self.predictor.predict_prepared(list(prepared_items))
        confidence = self.metrics.confidence.labels(**self._labels)
        for p in predictions:
            self.metrics.predictions.labels(prdtypecode=str(p.code), **self._labels).inc()
            confidence.observe(p.confidence)
        if self.drift is not None:
            self.drift.add([INDEX[p.code] for p in predictions], [p.confidence for p in predictions])
        return predictions

