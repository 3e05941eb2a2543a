"""A challenger beside the champion (CHALLENGER_MODELS_DIR): shadow and canary, on the tiny pipeline's models."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from product_classifier import paths
from product_classifier.inference import bundle
from serving.app import create_app
from serving.challenger import user_bucket

from .conftest import USER, metric, settings_for, token_for

PRODUCT = {"designation": "Lot de 3 figurines Star Wars", "description": "Neuf"}


@pytest.fixture(scope="module")
def challenger_dir(tiny_repo, tmp_path_factory) -> Path:
    """Another model: the tiny models with the fusion leaning on text alone, and its own dvc.lock."""
    checkout = tmp_path_factory.mktemp("challenger")
    shutil.copytree(tiny_repo / "models", checkout / "models")
    fusion_file = checkout / "models" / paths.FUSION / paths.FUSION_FILE
    fused = json.loads(fusion_file.read_text())
    fused["fusion"]["text_weight"] = 1.0 if fused["fusion"].get("text_weight", 1.0) != 1.0 else 0.0
    fusion_file.write_text(json.dumps(fused))
    manifest = checkout / "models" / paths.BUNDLE_FILE
    manifest.write_text(json.dumps(bundle.manifest(checkout / "models")))  # as the fuse stage would
    lock = yaml.safe_load((tiny_repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == f"models/{paths.BUNDLE_FILE}":
                out["md5"] = hashlib.md5(manifest.read_bytes()).hexdigest()
    (checkout / "dvc.lock").write_text(yaml.safe_dump(lock))
    return checkout / "models"


def app_with(tiny_models, tmp_path, challenger_dir, **overrides):
    return TestClient(create_app(settings_for(tiny_models, tmp_path, challenger_models_dir=challenger_dir, **overrides)))


def wait_for_metric(client, name: str, minimum: float, timeout: float = 60, **labels) -> float:
    deadline = time.monotonic() + timeout
    while (value := metric(client, name, **labels)) < minimum:
        assert time.monotonic() < deadline, f"{name}{labels} = {value}, expected >= {minimum}"
        time.sleep(0.2)
    return value


def test_user_buckets_are_sticky_and_spread():
    names = [f"user-{i}" for i in range(20_000)]
    assert [user_bucket(n) for n in names[:50]] == [user_bucket(n) for n in names[:50]]
    share = sum(user_bucket(n) < 0.1 for n in names) / len(names)
    assert 0.09 < share < 0.11


def test_shadow_the_champion_answers_the_challenger_is_measured(tiny_models, tmp_path, challenger_dir):
    with app_with(tiny_models, tmp_path, challenger_dir, challenger_mode="shadow") as client:
        auth = {"Authorization": f"Bearer {token_for(client)}"}
        info = client.get("/model", headers=auth).json()
        champion, challenger = info["version"], info["challenger"]["version"]
        assert champion != challenger and info["role"] == "champion" and info["challenger"]["mode"] == "shadow"
        fresh = client.get("/metrics").text  # the agreement counters start at 0 (a panel reads 0, not "No data")
        assert re.findall(r'^model_challenger_agreement_total\{result="(\w+)"\} 0\.0$', fresh, re.M) == ["agree", "disagree"]
        for _ in range(5):
            response = client.post("/predict", data=PRODUCT, headers=auth)
            assert response.status_code == 200 and response.json()["model_version"] == champion
        assert wait_for_metric(client, "model_challenger_agreement_total", 5) == 5
        assert metric(client, "model_predictions_total", role="champion", version=champion) == 5
        assert metric(client, "model_predictions_total", role="challenger", version=challenger) == 5
        assert metric(client, "model_prediction_confidence_count", role="challenger") == 5
        assert metric(client, "model_inference_seconds_count", stage="model", role="challenger") == 5
        assert metric(client, "model_info", role="challenger", version=challenger) == 1
        # The shadow prediction does not count the product's input twice.
        assert metric(client, "model_inputs_total") == 5


def test_a_failing_shadow_challenger_never_breaks_the_champion(tiny_models, tmp_path, challenger_dir):
    with app_with(tiny_models, tmp_path, challenger_dir, challenger_mode="shadow") as client:
        def broken(_items):
            raise RuntimeError("challenger out of memory")

        client.app.state.challenger.service.run_prediction = broken
        auth = {"Authorization": f"Bearer {token_for(client)}"}
        for _ in range(3):
            response = client.post("/predict", data=PRODUCT, headers=auth)
            assert response.status_code == 200, response.text
        batch = client.post("/predict/batch", json={"items": [PRODUCT, PRODUCT]}, headers=auth)
        assert batch.status_code == 200 and batch.json()["succeeded"] == 2
        assert wait_for_metric(client, "model_challenger_errors_total", 5) == 5
        assert metric(client, "model_challenger_agreement_total") == 0


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_canary_a_sticky_share_of_users_gets_the_challenger(tiny_models, tmp_path, challenger_dir, share):
    with app_with(tiny_models, tmp_path, challenger_dir, challenger_mode="canary", challenger_share=share) as client:
        auth = {"Authorization": f"Bearer {token_for(client)}"}
        info = client.get("/model", headers=auth).json()
        assert info["challenger"] == {**info["challenger"], "mode": "canary", "share": share}
        expected = info["challenger"]["version"] if user_bucket(USER) < share else info["version"]
        versions = {client.post("/predict", data=PRODUCT, headers=auth).json()["model_version"] for _ in range(4)}
        batch = client.post("/predict/batch", json={"items": [PRODUCT]}, headers=auth).json()
        assert versions == {expected} and batch["model_version"] == expected
        role = "challenger" if expected != info["version"] else "champion"
        assert metric(client, "model_predictions_total", role=role) == 5
        assert metric(client, "model_challenger_agreement_total") == 0  # canary makes no shadow predictions


def test_a_challenger_that_does_not_match_its_dvc_lock_stops_the_start(tiny_models, tmp_path, challenger_dir):
    broken = tmp_path / "broken"
    shutil.copytree(challenger_dir.parent, broken)
    fusion_file = broken / "models" / paths.FUSION / paths.FUSION_FILE
    fused = json.loads(fusion_file.read_text())
    fused["fusion"]["text_weight"] = 0.5
    fusion_file.write_text(json.dumps(fused))
    with pytest.raises(Exception, match="changed after the pipeline wrote it"), \
            app_with(tiny_models, tmp_path, broken / "models"):  # noqa: B017
        pass
    # Its bundle rewritten to match (as another fuse run would): now dvc.lock is the one that disagrees.
    (broken / "models" / paths.BUNDLE_FILE).write_text(json.dumps(bundle.manifest(broken / "models")))
    with pytest.raises(Exception, match="does not match .*different runs"), \
            app_with(tiny_models, tmp_path, broken / "models"):  # noqa: B017
        pass


def test_no_challenger_by_default(client, auth):
    assert client.get("/model", headers=auth).json()["challenger"] is None
    assert "model_challenger_agreement_total{" not in client.get("/metrics").text
