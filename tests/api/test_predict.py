"""/predict, /predict/batch, /model and the public routes, against the real app and the tiny pipeline's model."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from conftest import raw_images
from product_classifier import paths
from product_classifier.inference.labels import CLASSES
from serving.app import create_app

from .conftest import PASSWORD, jpeg, metric, settings_for, token_for


def version_from_lock(lock) -> str:
    """The model version as docs/serving.md defines it: that of the bundle dvc.lock records (sha256 of the served
    files' sha256, 12 hex digits), computed here from the files themselves rather than by the server's code."""
    models = lock.parent / "models"
    recorded = {o["path"]: o["md5"] for stage in yaml.safe_load(lock.read_text())["stages"].values()
                for o in stage.get("outs", [])}[f"models/{paths.BUNDLE_FILE}"]
    assert hashlib.md5((models / paths.BUNDLE_FILE).read_bytes()).hexdigest() == recorded
    files = json.loads((models / paths.BUNDLE_FILE).read_text())["files"]
    joined = ",".join(f"{rel}={hashlib.sha256((models / rel).read_bytes()).hexdigest()}" for rel in sorted(files))
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


FIELDS = {"prdtypecode", "category", "confidence", "top_k", "modalities", "model_version", "request_id"}


def test_public_routes(client, auth):
    assert "Bienvenue" in client.get("/").json()["message"]
    assert client.get("/status").json() == {"status": "L'API fonctionne correctement"}
    assert client.get("/health/live").json()["status"] == "ok"
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ok" and ready["model_version"]
    code = client.post("/predict", data={"designation": "Piscine tubulaire"}, headers=auth).json()["prdtypecode"]
    before = metric(client, "model_predictions_total", prdtypecode=code, role="champion")
    assert client.post("/predict", data={"designation": "Piscine tubulaire"}, headers=auth).json()["prdtypecode"] == code
    assert metric(client, "model_predictions_total", prdtypecode=code, role="champion") == before + 1  # the /metrics route is public and counts each answer


def test_answers_of_the_limits_count_in_the_http_metrics(client):
    """401s from the token check (and the limits' 413s and 503s, answered by the same middleware stack) reach
    http_requests_total, so the error-rate alert sees them."""
    def refused() -> float:
        return metric(client, "http_requests_total", handler="/predict", method="POST", status="4xx")

    before = refused()
    assert client.post("/predict", data={"designation": "Piscine tubulaire"}).status_code == 401
    assert refused() == before + 1


def test_counters_with_known_labels_start_at_zero(serving_settings):
    """A fresh service: one sample per class and per input kind, each at 0, before any product arrives (so the
    dashboard reads 0, not "No data"); a shadow challenger's agreement counters: tests/api/test_challenger.py."""
    with TestClient(create_app(serving_settings)) as fresh:
        text = fresh.get("/metrics").text
    predicted = re.findall(r'^model_predictions_total\{prdtypecode="(\d+)",role="champion",version="\w+"\} 0\.0$', text, re.M)
    assert sorted(map(int, predicted)) == sorted(CLASSES)
    inputs = re.findall(r'^model_inputs_total\{description="(yes|no)",image="(yes|no)"\} 0\.0$', text, re.M)
    assert sorted(inputs) == [("no", "no"), ("no", "yes"), ("yes", "no"), ("yes", "yes")]


def test_predict_text_only_says_so(client, auth, serving_settings):
    response = client.post("/predict", data={"designation": "Piscine tubulaire 3m", "productid": 42}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= FIELDS
    assert body["modalities"] == ["text"] and body["productid"] == 42
    assert body["prdtypecode"] in CLASSES
    assert body["top_k"][0]["prdtypecode"] == body["prdtypecode"]
    assert body["top_k"][0]["probability"] == pytest.approx(body["confidence"])
    probabilities = [t["probability"] for t in body["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) == serving_settings.top_k
    assert body["model_version"] == version_from_lock(serving_settings.models_dir.parent / "dvc.lock")


def test_predict_with_image_uses_both_modalities(client, auth, train_images):
    image = train_images[0]
    response = client.post("/predict", data={"designation": "Lot de figurines", "description": "<b>Neuf</b>"},
                           files={"image": (image.name, image.read_bytes(), "image/jpeg")}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["modalities"] == ["text", "image"]


@pytest.mark.parametrize("data", [
    jpeg(mode="L"), jpeg(mode="CMYK"), jpeg(fmt="PNG", mode="RGBA"), jpeg(size=(800, 300), fmt="WEBP"),
    jpeg(fmt="PNG", mode="I;16", size=(120, 80)), jpeg(fmt="GIF", mode="P"),
], ids=["grayscale", "cmyk", "rgba-png", "wide-webp", "16-bit-png", "palette-gif"])
def test_image_modes_are_converted(client, auth, data):
    response = client.post("/predict", data={"designation": "Coussin"}, files={"image": ("x", data)}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["modalities"] == ["text", "image"]


def test_blank_image_counts_as_no_image(client, auth):
    response = client.post("/predict", data={"designation": "Coussin"},
                           files={"image": ("blank.jpg", jpeg(blank=True))}, headers=auth)
    assert response.status_code == 200 and response.json()["modalities"] == ["text"]


def test_exif_orientation_is_applied(client, auth):
    """A photo stored sideways with an EXIF rotation gives the same answer as the upright photo."""
    upright = Image.new("RGB", (300, 500), "white")
    upright.paste((10, 10, 200), (0, 0, 300, 250))
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise: viewers turn it back clockwise
    out_up, out_side = io.BytesIO(), io.BytesIO()
    upright.save(out_up, "PNG")
    sideways.save(out_side, "PNG", exif=exif)
    answers = [client.post("/predict", data={"designation": "Vase"}, files={"image": ("x.png", data)}, headers=auth)
               .json() for data in (out_up.getvalue(), out_side.getvalue())]
    assert answers[0]["top_k"] == answers[1]["top_k"]


@pytest.mark.parametrize("files,status,words", [
    ({"image": ("notes.txt", b"this is not an image", "text/plain")}, 422, "not a readable image"),
    ({"image": ("cut.jpg", jpeg()[:400], "image/jpeg")}, 422, "image"),
    ({"image": ("empty.jpg", b"", "image/jpeg")}, 422, "empty"),
])
def test_bad_images_get_4xx_json(client, auth, files, status, words):
    response = client.post("/predict", data={"designation": "Vase"}, files=files, headers=auth)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_decompression_bomb_is_refused(client, auth):
    bomb = jpeg(size=(9000, 9000), blank=True, quality=5)  # 81 MP in a few hundred KB
    response = client.post("/predict", data={"designation": "Vase"}, files={"image": ("bomb.jpg", bomb)}, headers=auth)
    assert response.status_code == 422 and "accepted range" in response.json()["detail"]


def test_oversized_upload_is_413_before_reading_it(client, auth, serving_settings):
    huge = b"\xff" * (serving_settings.max_upload_bytes + 100_000)
    response = client.post("/predict", data={"designation": "Vase"}, files={"image": ("big.jpg", huge)}, headers=auth)
    assert response.status_code == 413
    assert "MAX_UPLOAD_BYTES" in response.json()["detail"] and response.json()["request_id"]


@pytest.mark.parametrize("form,words", [
    ({}, "designation"), ({"designation": "   "}, "designation"), ({"designation": "x" * 5000}, "at most 1000 characters"),
    ({"designation": "Vase", "productid": "abc"}, "productid"),
])
def test_bad_text_fields_get_422(client, auth, form, words):
    response = client.post("/predict", data=form, headers=auth)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]


def test_text_with_no_usable_word_is_scored_from_the_image_or_as_unknown_text(client, auth, train_images):
    """Emoji or punctuation only: the image alone decides; with no image either, the unknown-text answer."""
    image = {"image": (train_images[0].name, train_images[0].read_bytes())}
    with_image = client.post("/predict", data={"designation": "🎁🎉 !!! ???"}, files=image, headers=auth)
    assert with_image.status_code == 200, with_image.text
    assert with_image.json()["modalities"] == ["image"]
    alone = client.post("/predict", data={"designation": "!!! ???", "description": "  "}, headers=auth)
    assert alone.status_code == 200, alone.text
    assert alone.json()["modalities"] == [] and alone.json()["prdtypecode"] in CLASSES
    other_title = client.post("/predict", data={"designation": "★★★"}, files=image, headers=auth).json()
    assert other_title["modalities"] == ["image"]
    assert (other_title["prdtypecode"], other_title["confidence"]) == (with_image.json()["prdtypecode"], with_image.json()["confidence"])


def test_undecodable_text_is_handled(client, auth):
    body = (b'--b\r\nContent-Disposition: form-data; name="designation"\r\n\r\n'
            b"Chaise \xe9l\xe9gante \xff\xfe\r\n--b--\r\n")
    response = client.post("/predict", content=body, headers={**auth, "Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 200, response.text


def test_request_id_echoed_or_made_and_logged_without_secrets(tmp_path, tiny_models):
    settings = settings_for(tiny_models, tmp_path)  # its own app: the log file is per app (SERVING_LOGGER_PATH)
    with TestClient(create_app(settings)) as client:
        token = token_for(client)
        auth = {"Authorization": f"Bearer {token}"}
        echoed = client.get("/status", headers={"X-Request-ID": "trace-123"})
        assert echoed.headers["x-request-id"] == "trace-123"
        made = client.get("/status", headers={"X-Request-ID": "bad id\nforged log line"}).headers["x-request-id"]
        assert len(made) == 32 and "\n" not in made
        response = client.post("/predict", data={"designation": "Vase"}, headers={**auth, "X-Request-ID": "pred-1"})
        assert response.json()["request_id"] == "pred-1"
    log = settings.serving_logger_path.read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    logged = next(r for r in lines if r.get("request_id") == "pred-1")
    assert logged["method"] == "POST" and logged["path"] == "/predict" and logged["status"] == 200
    assert logged["user"] == "alice" and logged["duration_ms"] > 0
    assert any(r.get("path") == "/token" and r.get("status") == 200 for r in lines)
    assert token not in log and PASSWORD not in log and "forged" not in log


def test_batch_mixes_good_and_bad_items(client, auth, train_images):
    good_image = base64.b64encode(train_images[1].read_bytes()).decode()
    items = [
        {"designation": "Piscine gonflable", "productid": 1},
        {"designation": "Figurine", "image_base64": good_image, "imageid": 7},
        {"description": "no designation"},
        {"designation": "Vase", "image_base64": "%%% not base64 %%%"},
        {"designation": "Vase", "image_base64": base64.b64encode(b"not an image").decode()},
        {"designation": "Coussin", "image_base64": good_image},
    ]
    response = client.post("/predict/batch", json={"items": items}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] == list(range(len(items)))
    ok = [r["prediction"] is not None for r in body["results"]]
    assert ok == [True, True, False, False, False, True]
    assert (body["succeeded"], body["failed"]) == (3, 3)
    assert body["results"][1]["prediction"]["modalities"] == ["text", "image"]
    assert body["results"][1]["prediction"]["imageid"] == 7
    assert [r["error"]["status"] for r in body["results"] if r["error"]] == [422, 422, 422]
    assert "base64" in body["results"][3]["error"]["detail"]
    single = client.post("/predict", data={"designation": "Piscine gonflable"}, headers=auth).json()
    batched = body["results"][0]["prediction"]["top_k"]
    assert [t["prdtypecode"] for t in batched] == [t["prdtypecode"] for t in single["top_k"]]
    assert [t["probability"] for t in batched] == pytest.approx([t["probability"] for t in single["top_k"]], abs=1e-6)


def test_batch_limits(client, auth, serving_settings):
    assert client.post("/predict/batch", json={"items": []}, headers=auth).status_code == 422
    too_many = [{"designation": "Vase"}] * (serving_settings.max_batch_items + 1)
    response = client.post("/predict/batch", json={"items": too_many}, headers=auth)
    assert response.status_code == 422 and "MAX_BATCH_ITEMS" in response.json()["detail"]
    assert client.post("/predict/batch", content=b"{not json", headers=auth).status_code == 422


def test_model_route(client, auth, tiny_repo):
    body = client.get("/model", headers=auth).json()
    assert [c["prdtypecode"] for c in body["classes"]] == list(CLASSES)
    manifest = json.loads((tiny_repo / paths.MODELS / paths.BUNDLE_FILE).read_text())
    assert body["artifacts"] == manifest["files"] and body["version"] == manifest["version"]  # the served files' sha256
    assert body["image_precision"] == "float32"  # quantize.int8 is off by default
    evaluated = json.loads((tiny_repo / "metrics" / "evaluate" / "metrics.json").read_text())
    assert body["metrics"]["fused"]["f1_weighted"] == evaluated["fused"]["f1_weighted"]
    assert client.get("/model").status_code == 401


def test_no_skew_between_evaluate_and_the_api(client, auth, tiny_repo):
    """Test-split products sent through HTTP get the class and confidence that `evaluate` computed."""
    raw = tiny_repo / "data" / "raw"
    evaluated = pd.read_csv(tiny_repo / paths.METRICS / "evaluate" / paths.PREDICTIONS_FILE, keep_default_na=False)
    products = pd.read_csv(raw / paths.X_TRAIN, index_col=0).set_index("productid")
    sample = evaluated.sample(n=min(25, len(evaluated)), random_state=0)
    images = raw_images(raw)
    for row in sample.itertuples():
        product = products.loc[row.productid]
        name = paths.image_name(row.imageid, row.productid)
        form = {"designation": product.designation}
        if isinstance(product.description, str):
            form["description"] = product.description
        # evaluate scored an unreadable image file as no image; a client sends no image for it
        files = {"image": (name, images[name])} if "image" in row.modalities else None
        response = client.post("/predict", data=form, files=files, headers=auth)
        body = response.json()
        assert body["prdtypecode"] == row.predicted, f"product {row.productid}"
        assert body["confidence"] == pytest.approx(row.confidence, abs=1e-5)


def test_startup_fails_fast_when_artifacts_do_not_match_dvc_lock(tmp_path, tiny_repo):
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(tiny_repo / "dvc.lock", copy / "dvc.lock")
    shutil.copytree(tiny_repo / "models", copy / "models")
    fusion = copy / paths.MODELS / paths.FUSION / paths.FUSION_FILE
    fusion.write_text(fusion.read_text().replace("}", " }", 1))
    with pytest.raises(Exception, match="fusion.json: sha256 .* changed after the pipeline wrote it"), \
            TestClient(create_app(settings_for(copy / "models", tmp_path))):
        pass
    shutil.rmtree(copy / "models" / "vgg16")
    with pytest.raises(Exception, match="missing"), TestClient(create_app(settings_for(copy / "models", tmp_path))):
        pass


def test_readiness_waits_for_the_model(tmp_path, tiny_models):
    app = create_app(settings_for(tiny_models, tmp_path))
    loading = TestClient(app)  # no lifespan: nothing loaded
    assert loading.get("/health/live").status_code == 200
    assert loading.get("/health/ready").json() == {"status": "loading", "model_version": None}
    assert loading.post("/predict", data={"designation": "Vase"}).status_code == 401  # no token: refused first
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 200
        bearer = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.post("/predict", data={"designation": "Vase"}, headers=bearer).status_code == 200
    # Shut down (the model released, the users still known): a valid token gets 503, not a prediction.
    response = TestClient(app).post("/predict", data={"designation": "Vase"}, headers=bearer)
    assert response.status_code == 503 and response.json()["detail"] == "model not loaded yet", response.text
    assert response.headers["retry-after"] == "5"


def test_unknown_route_and_method_are_json_with_request_id(client):
    for response, status in ((client.get("/no-such-route"), 404), (client.delete("/predict"), 405)):
        assert response.status_code == status
        assert response.json()["request_id"] == response.headers["x-request-id"]


def test_unexpected_failure_is_json_500_with_request_id(tmp_path, tiny_models):
    """A model that breaks at run time (not the client's fault): JSON 500 naming the request, logged."""
    from product_classifier.inference.predictor import Predictor

    class Broken(Predictor):
        def text_proba(self, tokens):
            raise RuntimeError("device lost")

    settings = settings_for(tiny_models, tmp_path)
    with TestClient(create_app(settings, loader=Broken.load), raise_server_exceptions=False) as client:
        response = client.post("/predict", data={"designation": "Vase"},
                               headers={"Authorization": f"Bearer {token_for(client)}"})
    assert response.status_code == 500
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert "device lost" in settings.serving_logger_path.read_text()
