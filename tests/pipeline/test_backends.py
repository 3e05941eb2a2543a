"""The Keras code runs unchanged under a second backend (JAX), selected by `train.backend`."""

from __future__ import annotations

import json
import re

import pytest

from conftest import copy_repo, sh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KERAS_STAGES = ("train_lstm", "train_vgg16")  # fuse and evaluate run the exported ONNX models, no Keras


def test_pipeline_trains_and_evaluates_under_jax(tiny_repo, tmp_path):
    repo = copy_repo(tiny_repo, tmp_path / "repo")  # its data stages are kept: only the training and after rerun
    out = sh("dvc exp run -S train.backend=jax -S train.epochs=10", repo, extra_env={"MLFLOW_TRACKING_URI": "none"}).stdout
    for stage in KERAS_STAGES:
        assert re.search(rf'{stage}\.py: done in [\d.]+s \{{.*"keras_backend": "jax"' , out), f"{stage} did not run under jax"
    assert '"keras_backend": "tensorflow"' not in out
    for stage in ("fuse", "evaluate"):
        assert re.search(rf"{stage}\.py: done in [\d.]+s \{{", out), f"{stage} did not run on ONNX Runtime alone"
    metrics = json.loads((repo / "metrics/evaluate/metrics.json").read_text())
    # 27 classes (chance 0.04), the largest holds 12% of rows: 0.35 is well above both.
    assert metrics["fused"]["accuracy"] > 0.35
    assert metrics["fused"]["accuracy"] >= max(metrics["lstm"]["accuracy"], metrics["vgg16"]["accuracy"]) - 0.05
    assert metrics["lstm"]["accuracy"] > 0.2 and metrics["vgg16"]["accuracy"] > 0.2
    assert "backend: jax" in (repo / "params.yaml").read_text()
