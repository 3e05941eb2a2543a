"""Prometheus metrics: the instrumentator's HTTP metrics plus the model's, in one registry per app.

Names and labels are an interface (monitoring/ alert rules and dashboards query them): keep them.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from product_classifier.inference.labels import CLASSES

CONFIDENCE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
TEXT_CHARS_BUCKETS = (10, 25, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
PRESENCE = ("yes", "no")  # model_inputs_total's description and image labels
AGREEMENT = ("agree", "disagree")  # model_challenger_agreement_total's result label
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ModelMetrics:
    def __init__(self, registry: CollectorRegistry):
        # `role` is champion (answers) or challenger (CHALLENGER_MODELS_DIR: shadow or canary), `version` its model.
        self.inference_seconds = Histogram(
            "model_inference_seconds", "Time spent per call, by stage: preprocess (one product) or model (one batch)",
            ["stage", "role", "version"], buckets=INFERENCE_BUCKETS, registry=registry)
        self.predictions = Counter("model_predictions_total", "Predictions made, by predicted class",
                                   ["prdtypecode", "role", "version"], registry=registry)
        self.confidence = Histogram("model_prediction_confidence", "Probability of the predicted class",
                                    ["role", "version"], buckets=CONFIDENCE_BUCKETS, registry=registry)
        self.info = Gauge("model_info", "Always 1; the labels say which model version is served in which role",
                          ["version", "role"], registry=registry)
        # Shadow mode: the challenger predicts on the champion's requests, off the request path.
        self.agreement = Counter("model_challenger_agreement_total", "Shadow predictions, by whether the challenger "
                                 "predicted the champion's class", ["result"], registry=registry)
        self.shadow_skipped = Counter("model_challenger_shadow_skipped_total", "Shadow predictions not made: the "
                                      "challenger's queue was full (the champion never waits for it)", registry=registry)
        self.challenger_errors = Counter("model_challenger_errors_total", "Challenger predictions that failed "
                                         "(in shadow mode the champion's answer is unaffected)", registry=registry)
        # Drift (serving/drift.py): computed at each scrape over the recent time window; NaN below the minimum sample.
        self.drift = Gauge("model_drift_score",
                           "Jensen-Shannon divergence (base 2) of the recent predicted-class mix from the predicted mix "
                           "on the validation split; NaN when there is not enough data", registry=registry)
        self.drift_p_value = Gauge("model_drift_p_value",
                                   "G-test p-value of the recent predicted-class counts against the predicted mix on "
                                   "the validation split (alert on p < alpha: false-alarm rate alpha); NaN when there "
                                   "is not enough data", registry=registry)
        self.drift_predictions = Gauge("model_drift_window_predictions",
                                       "Predictions in the drift window (the statistics need DRIFT_MIN_SAMPLES)",
                                       registry=registry)
        self.low_confidence = Gauge("model_low_confidence_share",
                                    "Share of the drift window's predictions with a confidence below the reference "
                                    "threshold; NaN when there is not enough data", registry=registry)
        self.low_confidence_reference = Gauge("model_low_confidence_share_reference",
                                              "Share of low-confidence predictions on the validation split",
                                              registry=registry)
        # Input drift: what the products look like (Prometheus compares a recent window with a longer one).
        self.input_text_chars = Histogram("model_input_text_chars", "Characters of designation plus description",
                                          buckets=TEXT_CHARS_BUCKETS, registry=registry)
        self.inputs = Counter("model_inputs_total", "Products received, by whether they have a description and "
                              "a usable image", ["description", "image"], registry=registry)
        # Label values known in advance start at 0 (the Prometheus client guidance), so that a healthy service's
        # panels and alert expressions read 0, not "No data", before the first such product or shadow answer.
        for description in PRESENCE:
            for image in PRESENCE:
                self.inputs.labels(description=description, image=image)

    def serve(self, role: str, version: str) -> dict[str, str]:
        """A model now serves in `role`: its info series, and its per-class prediction counters at 0."""
        labels = {"role": role, "version": version}
        self.info.labels(**labels).set(1)
        for code in CLASSES:
            self.predictions.labels(prdtypecode=str(code), **labels)
        return labels

    def shadow(self) -> None:
        """A challenger in shadow mode: its agreement counters at 0 (none without one)."""
        for result in AGREEMENT:
            self.agreement.labels(result=result)


def storage_fallback(registry: CollectorRegistry, on_memory: Callable[[], bool]) -> Gauge:
    """`rate_limit_storage_fallback`: 1 while the rate limits' storage (Redis) does not answer and this replica
    counts in its own memory, read at each scrape."""
    gauge = Gauge("rate_limit_storage_fallback", "1 while rate limits count in this replica's memory because their "
                  "storage (RATE_LIMIT_STORAGE_URI, Redis) does not answer; 0 on that storage", registry=registry)
    gauge.set_function(lambda: float(on_memory()))
    return gauge


def presence(value: object) -> str:
    """The `description` / `image` label value of `model_inputs_total`."""
    return PRESENCE[0] if value else PRESENCE[1]
