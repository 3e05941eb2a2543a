"""The served models' identity (serving/artifacts.py) on the tiny pipeline's real models and dvc.lock, pruned as
the serving image's build prunes them (`python -m serving.artifacts prune`): the Keras files go, the identity stays."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import PROJECT, env, raw_images
from product_classifier import paths
from product_classifier.errors import DataError
from product_classifier.inference.predictor import Predictor, Product
from serving.artifacts import MANIFEST_FILE, file_md5, locked_hashes, prune, verify_artifacts

pytestmark = pytest.mark.slow


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


def test_prune_deletes_the_keras_files_and_keeps_dvc_locks_identity(models, lock, tiny_repo):
    locked = locked_hashes(yaml.safe_load(lock.read_text()), tiny_repo, tiny_repo / paths.MODELS)
    before = verify_artifacts(models, lock)
    assert keras_files(models) == [f"{paths.LSTM}/{paths.MODEL_FILE}", f"{paths.VGG16}/{paths.MODEL_FILE}"]

    deleted, freed = prune(models)

    assert deleted == 2 and freed > 0 and keras_files(models) == []
    for kept in (f"{paths.LSTM}/{paths.ONNX_FILE}", f"{paths.LSTM}/{paths.VOCAB_FILE}", f"{paths.VGG16}/{paths.ONNX_FILE}",
                 f"{paths.VGG16}/{paths.META_FILE}", f"{paths.FUSION}/{paths.FUSION_FILE}"):
        assert (models / kept).is_file(), kept
    assert sorted(p.name for p in (models / paths.FUSION).iterdir()) == \
        sorted(p.name for p in (tiny_repo / paths.MODELS / paths.FUSION).iterdir())  # fusion/ untouched
    manifest = json.loads((models / MANIFEST_FILE).read_text())
    assert set(manifest["models"]) == set(paths.MODEL_DIRS)
    assert paths.MODEL_FILE in manifest["models"][paths.LSTM]
    assert (models / MANIFEST_FILE).stat().st_mode & 0o777 == 0o644  # readable by the image's uid 10001
    after = verify_artifacts(models, lock)
    assert after.hashes == before.hashes == locked
    assert after.version == before.version


def test_prune_again_changes_nothing(pruned, lock):
    manifest = (pruned / MANIFEST_FILE).read_text()
    assert prune(pruned) == (0, 0)
    assert (pruned / MANIFEST_FILE).read_text() == manifest
    verify_artifacts(pruned, lock)


def test_a_file_changed_after_pruning_is_refused(pruned, lock):
    vocab = pruned / paths.LSTM / paths.VOCAB_FILE
    vocab.write_bytes(vocab.read_bytes() + b" ")  # still valid JSON, another md5
    changed = rf"^{re.escape(str(vocab))}: changed after pruning \(md5 [0-9a-f]{{32}}, .*{MANIFEST_FILE} records "
    with pytest.raises(DataError, match=changed + r"[0-9a-f]{32}\); rebuild the image"):
        verify_artifacts(pruned, lock)


def test_a_changed_file_with_a_matching_manifest_still_fails_dvc_lock(pruned, lock):
    """The manifest cannot vouch for a served file: a forged md5 for it only changes the directory's hash."""
    vocab = pruned / paths.LSTM / paths.VOCAB_FILE
    vocab.write_bytes(vocab.read_bytes() + b" ")  # still valid JSON, another md5
    manifest = json.loads((pruned / MANIFEST_FILE).read_text())
    manifest["models"][paths.LSTM][paths.VOCAB_FILE] = file_md5(vocab)
    (pruned / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="does not match .*the models and dvc.lock come from different runs"):
        verify_artifacts(pruned, lock)


def test_a_served_file_listed_but_missing_is_named(pruned, lock):
    onnx = pruned / paths.VGG16 / paths.ONNX_FILE
    onnx.unlink()
    with pytest.raises(DataError, match=rf"^{re.escape(str(onnx))}: missing although .*{MANIFEST_FILE} lists it"):
        verify_artifacts(pruned, lock)


@pytest.mark.parametrize("text", [
    "{not json",
    "",
    "[]",
    '{"lstm": {}}',
    '{"models": {"lstm": ["model.keras"]}}',
    '{"models": {"lstm": {"model.keras": "not an md5"}}}',
    '{"models": {"lstm": {"../vgg16/model.onnx": "0123456789abcdef0123456789abcdef"}}}',
])
def test_a_corrupt_manifest_is_one_clear_error(pruned, lock, text):
    (pruned / MANIFEST_FILE).write_text(text)
    with pytest.raises(DataError) as error:
        verify_artifacts(pruned, lock)
    message = str(error.value)
    assert message.startswith(f"{pruned / MANIFEST_FILE}: corrupt prune manifest (") and "\n" not in message


def test_without_a_manifest_nothing_changes(models, lock):
    """Models as `dvc pull` leaves them (what compose mounts): checked file by file, as before pruning existed."""
    (models / paths.VGG16 / paths.MODEL_FILE).unlink()
    with pytest.raises(DataError, match="does not match"):
        verify_artifacts(models, lock)


def test_predictor_loads_a_pruned_directory_and_answers_as_before(pruned, tiny_repo):
    image = next(iter(raw_images(tiny_repo / paths.RAW).values()))
    products = [Product("Piscine hors-sol tubulaire", "Bâche et pompe", image), Product("Figurine de collection")]
    served = Predictor.load(pruned).predict(products)
    reference = Predictor.load(tiny_repo / paths.MODELS).predict(products)
    for got, want in zip(served, reference, strict=True):
        np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=1e-6, atol=1e-7)
        assert got.modalities == want.modalities


def test_prune_command_prints_what_it_freed_and_errors_in_one_line(models, tmp_path):
    def command(folder):
        return subprocess.run([sys.executable, "-m", "serving.artifacts", "prune", str(folder)], cwd=PROJECT,
                              env=env(), capture_output=True, text=True, timeout=120)

    done = command(models)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{models}: pruned 2 file(s), ") and MANIFEST_FILE in done.stdout
    missing = command(tmp_path / "nowhere")
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [f"error: {tmp_path / 'nowhere' / paths.LSTM}: missing model artifact "
                                           "directory; run `dvc repro` or `dvc pull`"]
