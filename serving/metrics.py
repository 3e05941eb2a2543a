"""Prometheus metrics: the instrumentator's HTTP metrics plus the model's, in one registry per app.

Names and labels are an interface (monitoring/ alert rules and dashboards query them): keep them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CONFIDENCE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ModelMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.inference_seconds = Histogram(
            "model_inference_seconds", "Time spent per call, by stage: preprocess (one product) or model (one batch)",
            ["stage"], buckets=INFERENCE_BUCKETS, registry=registry)
        self.predictions = Counter("model_predictions_total", "Predictions made, by predicted class",
                                   ["prdtypecode"], registry=registry)
        self.confidence = Histogram("model_prediction_confidence", "Probability of the predicted class",
                                    buckets=CONFIDENCE_BUCKETS, registry=registry)
        self.info = Gauge("model_info", "Always 1; the label says which model version is served",
                          ["version"], registry=registry)
        self.drift = Gauge("model_drift_score",
                           "Jensen-Shannon divergence (base 2) of the recent predicted-class mix from the training mix",
                           registry=registry)
