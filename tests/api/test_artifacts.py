"""The served models' bundle and identity (inference/bundle.py, serving/artifacts.py) on the tiny pipeline's real
models and dvc.lock: models/bundle.json lists every served file with its sha256, dvc.lock records the bundle's md5,
serving hashes each file once; pruned as the serving image's build prunes them (`python -m serving.artifacts
prune`), the Keras files go and the identity stays."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from conftest import PROJECT, env, raw_images
from product_classifier import paths
from product_classifier.errors import DataError
from product_classifier.inference import bundle
from product_classifier.inference.predictor import Predictor, Product
from serving.app import create_app
from serving.artifacts import prune, verify_artifacts

from .conftest import settings_for

pytestmark = pytest.mark.slow
SERVED = {f"{paths.LSTM}/{paths.ONNX_FILE}", f"{paths.LSTM}/{paths.VOCAB_FILE}", f"{paths.VGG16}/{paths.ONNX_FILE}",
          f"{paths.VGG16}/{paths.META_FILE}", f"{paths.FUSION}/{paths.FUSION_FILE}"}


@pytest.fixture()
def models(tiny_repo, tmp_path):
    """A copy of the tiny pipeline's models/, outside its repository (as the image holds them)."""
    return shutil.copytree(tiny_repo / paths.MODELS, tmp_path / "models")


@pytest.fixture()
def lock(tiny_repo):
    return tiny_repo / "dvc.lock"


@pytest.fixture()
def pruned(models):
    prune(models)
    return models


def keras_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(f"*{paths.MODEL_FILE}"))


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_bundle_lists_the_served_files_and_dvc_lock_records_it(tiny_repo, lock):
    """Computed here from the files themselves, not by the code under test."""
    models = tiny_repo / paths.MODELS
    manifest = json.loads((models / paths.BUNDLE_FILE).read_text())
    assert set(manifest["files"]) == SERVED
    assert manifest["files"] == {rel: sha256(models / rel) for rel in SERVED}
    joined = ",".join(f"{rel}={manifest['files'][rel]}" for rel in sorted(SERVED))
    assert manifest["version"] == hashlib.sha256(joined.encode()).hexdigest()[:12]
    outs = {o["path"]: o["md5"] for s in yaml.safe_load(lock.read_text())["stages"].values() for o in s.get("outs", [])}
    assert outs[f"models/{paths.BUNDLE_FILE}"] == hashlib.md5((models / paths.BUNDLE_FILE).read_bytes()).hexdigest()
    identity = verify_artifacts(models, lock)
    assert (identity.version, identity.files) == (manifest["version"], manifest["files"])


def test_prune_deletes_the_keras_files_and_keeps_the_identity(models, lock, tiny_repo):
    before = verify_artifacts(models, lock)
    assert keras_files(models) == [f"{paths.LSTM}/{paths.MODEL_FILE}", f"{paths.VGG16}/{paths.MODEL_FILE}"]

    deleted, freed = prune(models)

    assert deleted == 2 and freed > 0 and keras_files(models) == []
    for kept in SERVED:
        assert (models / kept).is_file(), kept
    assert sorted(p.name for p in (models / paths.FUSION).iterdir()) == \
        sorted(p.name for p in (tiny_repo / paths.MODELS / paths.FUSION).iterdir())  # fusion/ untouched
    after = verify_artifacts(models, lock)
    assert (after.version, after.files) == (before.version, before.files)
    assert prune(models) == (0, 0)  # again: nothing left to prune


def test_a_served_file_changed_after_the_pipeline_is_refused_naming_it(pruned, lock):
    vocab = pruned / paths.LSTM / paths.VOCAB_FILE
    vocab.write_bytes(vocab.read_bytes() + b" ")  # still valid JSON, another sha256
    changed = rf"^{re.escape(str(vocab))}: sha256 [0-9a-f]{{16}}\.\.\., .*{paths.BUNDLE_FILE} records [0-9a-f]{{16}}"
    with pytest.raises(DataError, match=changed + r"\.\.\.: changed after the pipeline wrote it"):
        verify_artifacts(pruned, lock)
    with pytest.raises(DataError, match=changed):
        Predictor.load(pruned)  # what the app loads: the same check
    verify_artifacts(pruned, lock, hash_files=False)  # the tie to dvc.lock alone still holds: bundle.json is unchanged


def test_a_bundle_rewritten_for_changed_files_fails_dvc_lock(pruned, lock):
    """The bundle cannot vouch for itself: rewritten to match a changed file, it is no longer the one dvc.lock
    records."""
    vocab = pruned / paths.LSTM / paths.VOCAB_FILE
    vocab.write_bytes(vocab.read_bytes() + b" ")
    (pruned / paths.BUNDLE_FILE).write_text(json.dumps(bundle.manifest(pruned)))
    bundle.load(pruned)  # consistent with itself
    with pytest.raises(DataError, match="does not match .*the models and dvc.lock come from different runs"):
        verify_artifacts(pruned, lock)


def test_a_served_file_missing_is_named(pruned, lock):
    (pruned / paths.VGG16 / paths.ONNX_FILE).unlink()
    (pruned / paths.LSTM / paths.VOCAB_FILE).unlink()
    with pytest.raises(DataError, match=rf"missing model artifact\(s\) {paths.LSTM}/{paths.VOCAB_FILE}, "
                                        rf"{paths.VGG16}/{paths.ONNX_FILE}; run `dvc repro` or `dvc pull`"):
        verify_artifacts(pruned, lock)


@pytest.mark.parametrize("text", [
    "{not json",
    "",
    "[]",
    '{"version": "x"}',
    '{"version": "x", "files": {"lstm/model.onnx": "not a sha256"}}',
    '{"version": "x", "files": {"../vgg16/model.onnx": "' + "0" * 64 + '"}}',
    '{"version": "not-its-files", "files": {"lstm/model.onnx": "' + "0" * 64 + '"}}',
])
def test_a_corrupt_bundle_is_one_clear_error(pruned, lock, text):
    (pruned / paths.BUNDLE_FILE).write_text(text)
    with pytest.raises(DataError) as error:
        verify_artifacts(pruned, lock, hash_files=False)
    message = str(error.value)
    assert message.startswith(f"{pruned / paths.BUNDLE_FILE}: corrupt bundle manifest (") and "\n" not in message


def test_predictor_loads_a_pruned_directory_and_answers_as_before(pruned, tiny_repo):
    image = next(iter(raw_images(tiny_repo / paths.RAW).values()))
    products = [Product("Piscine hors-sol tubulaire", "Bâche et pompe", image), Product("Figurine de collection")]
    served = Predictor.load(pruned).predict(products)
    reference = Predictor.load(tiny_repo / paths.MODELS).predict(products)
    for got, want in zip(served, reference, strict=True):
        np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=1e-6, atol=1e-7)
        assert got.modalities == want.modalities


def test_the_app_hashes_each_served_file_once_at_startup(tiny_models, tmp_path, monkeypatch):
    hashed = []
    real = bundle.file_sha256
    monkeypatch.setattr(bundle, "file_sha256", lambda path: hashed.append(path.relative_to(tiny_models).as_posix())
                        or real(path))
    with TestClient(create_app(settings_for(tiny_models, tmp_path))) as client:
        assert client.get("/health/ready").status_code == 200
    assert sorted(hashed) == sorted(SERVED)


def test_prune_command_prints_what_it_freed_and_errors_in_one_line(models, tmp_path):
    def command(folder):
        return subprocess.run([sys.executable, "-m", "serving.artifacts", "prune", str(folder)], cwd=PROJECT,
                              env=env(), capture_output=True, text=True, timeout=120)

    done = command(models)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{models}: pruned 2 file(s), ")
    missing = command(tmp_path / "nowhere")
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [f"error: {tmp_path / 'nowhere'}: missing model artifact(s) "
                                           f"{paths.BUNDLE_FILE}; run `dvc repro` or `dvc pull`"]
