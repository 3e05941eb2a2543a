"""The optional INT8 image model (`quantize.int8`): the fuse stage's gate, unit and end to end.

End to end on copies of the reproduced tiny pipeline (only fuse, evaluate and predict rerun): with bounds
the quantized model cannot meet it is refused (one warning line, float model kept, the stage succeeds);
with bounds set exactly at the figures that run measured it is accepted and served by `evaluate`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from api.conftest import settings_for, token_for
from fastapi.testclient import TestClient

from conftest import copy_repo, project_params, ran, sh
from product_classifier import paths
from product_classifier.errors import DataError
from product_classifier.inference.predictor import Predictor
from product_classifier.pipeline.fit_fusion import int8_gate
from product_classifier.pipeline.params import parse_params
from serving.app import create_app

INT8_FILE = paths.MODELS / paths.FUSION / paths.INT8_IMAGE_FILE
FUSION_FILE = paths.MODELS / paths.FUSION / paths.FUSION_FILE
FUSE_METRICS = paths.METRICS / "fuse" / paths.METRICS_FILE
EVALUATED = paths.EVALUATION / paths.PREDICTIONS_FILE


# --- the gate itself ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("float_f1", "int8_f1", "agreement", "accepted"),
    [
        (0.9, 0.89, 0.95, True),  # both exactly at the bounds (0.9 - 0.89 is 0.010000000000000009 in floats)
        (0.9, 0.95, 1.0, True),  # better than the float model
        (0.9, 0.8899, 0.99, False),  # drop 0.0101
        (0.9, 0.9, 0.9499, False),  # agreement just under
        (0.9, 0.88, 0.90, False),  # both out
    ],
)
def test_int8_gate_accepts_at_the_bounds_and_refuses_beyond(float_f1, int8_f1, agreement, accepted):
    ok, reason = int8_gate(float_f1, int8_f1, agreement, max_f1_drop=0.01, min_agreement=0.95)
    assert ok is accepted, reason
    assert "fused val F1 drop" in reason and "%" in reason and "\n" not in reason


def test_the_refusal_reason_gives_both_figures():
    assert int8_gate(0.9, 0.8877, 0.971, 0.01, 0.95) == (
        False, "fused val F1 drop 0.0123 > 0.01 (agreement 97.1%)")
    assert int8_gate(0.9, 0.9, 0.931, 0.01, 0.95) == (
        False, "agreement with the float model 93.1% < 95.0% (fused val F1 drop 0.0000)")


@pytest.mark.parametrize(("key", "value"), [("calibration_size", 0), ("max_f1_drop", -0.1), ("max_f1_drop", 1.5),
                                            ("min_agreement", 1.01), ("int8", "maybe")])
def test_bad_quantize_params_are_refused(key, value):
    with pytest.raises(Exception, match=f"quantize.{key}"):
        parse_params(project_params({"quantize": {key: value}}))


# --- the fuse stage on the tiny pipeline ----------------------------------------------------------

def quantized_copy(tiny_repo: Path, dest: Path, **bounds) -> tuple[Path, object]:
    """A copy of the reproduced tiny pipeline, `dvc repro` with `quantize.int8: true` and `bounds`."""
    copy_repo(tiny_repo, dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["quantize"] = {**params["quantize"], "int8": True, **bounds}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest, sh("dvc repro", dest, extra_env={"MLFLOW_TRACKING_URI": "none"})


@pytest.fixture(scope="module")
def refused(tiny_repo, tmp_path_factory):
    """Bounds no quantized model meets unless it changes no fused class on validation: on the tiny pipeline
    (3 epochs from scratch) INT8 changes about a quarter of the image model's classes on validation."""
    return quantized_copy(tiny_repo, tmp_path_factory.mktemp("int8-refused") / "repo", max_f1_drop=0.0,
                          min_agreement=1.0)


@pytest.fixture(scope="module")
def accepted(tiny_repo, refused, tmp_path_factory):
    """Bounds exactly at the figures the refused run reported: the gate accepts its own bounds."""
    measured = json.loads((refused[0] / FUSE_METRICS).read_text())["int8"]
    return quantized_copy(tiny_repo, tmp_path_factory.mktemp("int8-accepted") / "repo",
                          max_f1_drop=max(measured["f1_drop"], 0.0), min_agreement=measured["agreement"])


def fusion_hash(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["fuse"]["outs"] if o["path"] == f"models/{paths.FUSION}")


@pytest.mark.e2e
def test_int8_outside_the_bounds_is_refused_in_one_line_and_the_float_model_served(refused, tiny_repo):
    repo, result = refused
    assert result.returncode == 0
    assert ran(result.stdout) == ["fuse"]  # models/fusion came out as before: evaluate and predict are up to date
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "INT8" in line or "warning" in line]
    assert len(warnings) == 1, warnings
    assert re.fullmatch(r"warning: INT8 image model refused: .*fused val F1 drop -?\d\.\d{4}.*; the float model is "
                        r"served", warnings[0]), warnings[0]
    metrics = json.loads((repo / FUSE_METRICS).read_text())
    assert metrics["int8"]["accepted"] is False and metrics["int8"]["agreement"] < 1.0
    assert not (repo / INT8_FILE).exists() and "image_model" not in json.loads((repo / FUSION_FILE).read_text())
    assert Predictor.load(repo / paths.MODELS).image_precision == "float32"
    assert fusion_hash(repo) == fusion_hash(tiny_repo)
    assert "up to date" in sh("dvc status", repo).stdout


@pytest.mark.e2e
def test_int8_within_the_bounds_is_served_and_evaluated(accepted, refused, tiny_repo):
    repo, result = accepted
    assert sorted(ran(result.stdout)) == ["evaluate", "fuse", "predict"]
    assert "INT8 image model refused" not in result.stderr + result.stdout
    metrics = json.loads((repo / FUSE_METRICS).read_text())
    assert metrics["int8"] == {**json.loads((refused[0] / FUSE_METRICS).read_text())["int8"], "accepted": True}
    assert set(metrics["int8"]) == {"val_f1_weighted", "f1_drop", "agreement", "accepted"}
    assert metrics["val_f1_weighted"] == json.loads((tiny_repo / FUSE_METRICS).read_text())["val_f1_weighted"]
    assert (repo / INT8_FILE).is_file()
    assert json.loads((repo / FUSION_FILE).read_text())["image_model"] == f"{paths.FUSION}/{paths.INT8_IMAGE_FILE}"
    shown = sh("dvc metrics show --json", repo).stdout
    assert "metrics/fuse/metrics.json" in shown and "agreement" in shown

    # evaluate scored the INT8 model: its per-product answers are those of the INT8 predictor, not the float one's.
    predictor = Predictor.load(repo / paths.MODELS)
    assert predictor.image_precision == "int8"
    evaluated = pd.read_csv(repo / EVALUATED, keep_default_na=False)
    float_evaluated = pd.read_csv(tiny_repo / EVALUATED, keep_default_na=False)
    assert not np.allclose(evaluated["confidence"], float_evaluated["confidence"], atol=1e-6)
    from product_classifier.inference.imagestore import ImageStore
    from product_classifier.pipeline.evaluation import test_products
    from product_classifier.pipeline.processed import Processed

    store = ImageStore(paths.images_url(repo / paths.RAW, "train"))
    products, _ = test_products(Processed(repo / paths.PROCESSED), store)
    answers = predictor.predict(products, strict_image=False)
    assert [str(a.code) for a in answers] == evaluated["predicted"].astype(str).tolist()
    assert [a.confidence for a in answers] == pytest.approx(evaluated["confidence"].tolist(), abs=1e-5)

    # The benchmarks' override: the float image model of the same directory, whatever fusion.json names.
    as_float = Predictor.load(repo / paths.MODELS, image_model=f"{paths.VGG16}/{paths.ONNX_FILE}")
    assert as_float.image_precision == "float32"
    assert [a.confidence for a in as_float.predict(products[:20], strict_image=False)] == pytest.approx(
        float_evaluated["confidence"].tolist()[:20], abs=1e-5)


@pytest.mark.e2e
def test_model_route_reports_the_served_image_precision(accepted, tmp_path):
    with TestClient(create_app(settings_for(accepted[0] / paths.MODELS, tmp_path))) as client:
        auth = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.get("/model", headers=auth).json()["image_precision"] == "int8"


@pytest.mark.e2e
def test_a_missing_int8_file_named_by_fusion_json_is_one_clear_error(accepted, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(accepted[0] / paths.MODELS, models)
    (models / paths.FUSION / paths.INT8_IMAGE_FILE).unlink()
    with pytest.raises(DataError, match=r"missing model artifact\(s\) fusion/image\.int8\.onnx; run "
                                        r"`dvc repro` or `dvc pull`"):
        Predictor.load(models)


@pytest.mark.e2e
def test_the_bundle_alone_serves_the_int8_model(accepted, tmp_path):
    """What batch scoring on Ray ships to its actors: bundle.json and the files it lists, without the float image
    model the INT8 one replaces; the predictor loads from exactly those and runs INT8."""
    from product_classifier.scoring.ray_data import model_files

    shipped = model_files(accepted[0] / paths.MODELS)
    assert f"{paths.FUSION}/{paths.INT8_IMAGE_FILE}" in shipped and f"{paths.VGG16}/{paths.ONNX_FILE}" not in shipped
    for rel, data in shipped.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    assert Predictor.load(tmp_path).image_precision == "int8"
