"""End to end: the real pipeline with tiny params in a temporary git repository."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_repro_writes_metrics_for_each_model(tiny_repo):
    metrics = json.loads((tiny_repo / "metrics/evaluate/metrics.json").read_text())
    for model in ("fused", "lstm", "vgg16"):
        for key in ("accuracy", "f1_weighted", "f1_macro"):
            assert 0.0 <= metrics[model][key] <= 1.0
        assert 0 < metrics[model]["latency_ms"]["p50"] <= metrics[model]["latency_ms"]["p95"]
