"""The layering contracts of pyproject.toml ([tool.importlinter], run by `make lint`) hold on this tree, and each
one fails on a deliberately bad import in a temporary copy: serving reaching into the pipeline part, the inference
part importing Keras, the pipeline's library importing tracking."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT

LINT = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]


def copy_tree(dest: Path) -> Path:
    for folder in ("src", "serving"):
        shutil.copytree(PROJECT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(PROJECT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}  # the copy, not the installed tree
    return subprocess.run(LINT, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("layers"))


def test_the_contracts_hold_on_this_tree(clean):
    result = lint(clean)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "bad_import", "contract"), [
    ("serving/app.py", "from product_classifier.pipeline import training", "serving stands on the inference part"),
    ("serving/routers/model.py", "import mlflow", "serving stands on the inference part"),
    ("src/product_classifier/inference/predictor.py", "import keras", "the inference part knows nothing"),
    ("src/product_classifier/pipeline/training.py", "from product_classifier.tracking import client",
     "only the stage scripts (stages/) import tracking"),
    ("src/product_classifier/scoring/score.py", "from product_classifier.pipeline import params",
     "batch scoring stands on the inference part"),
])
def test_a_bad_import_breaks_its_contract(clean, tmp_path, module, bad_import, contract):
    root = copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n\ndef _bad():\n    {bad_import}\n")  # lazy imports count too
    result = lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in " ".join(broken.split()), result.stdout
    assert "0 broken" not in result.stdout
