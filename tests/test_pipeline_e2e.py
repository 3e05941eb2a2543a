"""End to end: the real DVC pipeline with tiny params in temporary git repositories."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import PROJECT, copy_repo, sh
from product_classifier import paths
from product_classifier.batch import COLUMNS
from product_classifier.labels import CLASSES, category

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
QUALITY = ("accuracy", "f1_weighted", "f1_macro")


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_0-9]+)'", output)


def quality(repo) -> dict:
    metrics = json.loads((repo / "metrics/evaluate/metrics.json").read_text())
    return {model: {k: metrics[model][k] for k in QUALITY} for model in ("fused", "lstm", "vgg16")}


def test_repro_writes_metrics_for_each_model(tiny_repo):
    metrics = json.loads((tiny_repo / "metrics/evaluate/metrics.json").read_text())
    for model in ("fused", "lstm", "vgg16"):
        for key in QUALITY:
            assert 0.0 <= metrics[model][key] <= 1.0
        assert 0 < metrics[model]["latency_ms"]["p50"] <= metrics[model]["latency_ms"]["p95"]
    assert metrics["fused"]["throughput_per_s"] > 0
    assert (tiny_repo / "metrics/evaluate/plots/sklearn/confusion_matrix.json").exists()
    for stage in ("train_lstm", "train_vgg16"):
        history = (tiny_repo / f"metrics/{stage}/plots/metrics/val/accuracy.tsv").read_text().splitlines()
        assert history[0].split("\t") == ["step", "accuracy"] and len(history) >= 2


def curve(repo, stage: str, split: str, metric: str) -> list[float]:
    rows = (repo / f"metrics/{stage}/plots/metrics/{split}/{metric}.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[1]) for row in rows]


@pytest.mark.parametrize("stage", ["train_lstm", "train_vgg16"])
def test_training_summary_describes_the_restored_best_epoch_not_the_last(tiny_repo, stage):
    summary = json.loads((tiny_repo / f"metrics/{stage}/metrics.json").read_text())
    val_loss = curve(tiny_repo, stage, "val", "loss")
    best = val_loss.index(min(val_loss))
    assert summary["best"] == {"best_epoch": best + 1, "epochs_run": len(val_loss)}
    for split in ("train", "val"):
        for metric in ("loss", "accuracy"):
            assert summary[split][metric] == pytest.approx(curve(tiny_repo, stage, split, metric)[best]), (split, metric)


def test_predict_scores_each_unlabeled_product_once(tiny_repo):
    products = pd.read_csv(tiny_repo / paths.RAW / paths.X_TEST, index_col=0)
    scored = pd.read_csv(tiny_repo / paths.PREDICTIONS / paths.PREDICTIONS_FILE)
    assert list(scored.columns) == list(COLUMNS)
    assert len(products) > 0 and len(scored) == len(products)
    assert scored["productid"].tolist() == products["productid"].tolist()
    assert scored["imageid"].tolist() == products["imageid"].tolist()
    assert scored["prdtypecode"].isin(CLASSES).all()
    assert (scored["category"] == scored["prdtypecode"].map(category)).all()
    assert scored["confidence"].between(0, 1, inclusive="right").all()
    # Most unlabeled products have a usable image in image_test/: both models scored them.
    assert scored["modalities"].isin(["text+image", "text", "image"]).all()
    assert (scored["modalities"] == "text+image").mean() > 0.5


def test_second_repro_is_a_no_op_and_status_is_clean(tiny_repo):
    out = sh("dvc repro", tiny_repo).stdout
    assert ran(out) == [] and "Data and pipelines are up to date" in out
    assert "up to date" in sh("dvc status", tiny_repo).stdout
    for name in paths.MODEL_DIRS:
        assert f"path: models/{name}" in (tiny_repo / "dvc.lock").read_text()


def test_metrics_and_plots_commands_work(tiny_repo, tmp_path):
    shown = json.loads(sh("dvc metrics show --json", tiny_repo).stdout)
    assert any("metrics/evaluate/metrics.json" in json.dumps(v) for v in shown.values())
    sh(f"dvc plots show -o {tmp_path / 'plots'}", tiny_repo)
    html = (tmp_path / "plots/index.html").read_text()
    assert "Fused model confusion matrix (test split)" in html and "per_class_f1" in html


def test_exp_run_with_new_epochs_reruns_only_training_and_after(changed_repo):
    repo, out, table = changed_repo
    assert sorted(ran(out)) == ["evaluate", "fuse", "predict", "train_lstm", "train_vgg16"]
    diff = sh("dvc metrics diff --md", repo).stdout
    assert "fused.f1_weighted" in diff
    params = sh("dvc params diff --md", repo).stdout
    assert re.search(r"train\.epochs\s*\|\s*3\s*\|\s*2", params), params
    assert "train.epochs" in table


def test_forced_rerun_gives_identical_quality(tiny_repo, tmp_path):
    repo = copy_repo(tiny_repo, tmp_path / "repo")
    before = quality(repo)
    predictions = (repo / paths.PREDICTIONS / paths.PREDICTIONS_FILE).read_bytes()
    out = sh("dvc repro --force", repo, extra_env={"MLFLOW_TRACKING_URI": "none"}).stdout  # as tiny_repo was built
    assert len(ran(out)) == 7
    assert quality(repo) == before
    assert (repo / paths.PREDICTIONS / paths.PREDICTIONS_FILE).read_bytes() == predictions


def test_default_sample_metrics_show_fusion_beats_each_model():
    """The committed metrics of the default pipeline run (regenerated by `make repro`)."""
    metrics = json.loads((PROJECT / "metrics/evaluate/metrics.json").read_text())
    assert metrics["fused"]["f1_weighted"] > metrics["lstm"]["f1_weighted"]
    assert metrics["fused"]["f1_weighted"] > metrics["vgg16"]["f1_weighted"]
