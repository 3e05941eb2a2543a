"""Gated promotion (`python -m product_classifier.tracking.promotion`) on a real MLflow sqlite store."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import PROJECT, env
from product_classifier.tracking import promotion
from product_classifier.tracking.promotion import decide

NAME = "ProductCodeClassifier"


def test_the_gate_is_the_tolerance():
    assert decide(0.80, None, 0.01, True).promote
    assert decide(0.795, 0.80, 0.01, True).promote
    assert not decide(0.785, 0.80, 0.01, True).promote
    assert not decide(0.90, 0.80, 0.01, same_split=False).promote


@pytest.fixture
def registry(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model(NAME)
    shutil.copy(PROJECT / "params.yaml", tmp_path / "params.yaml")  # promote.tolerance: 0.01

    def register(f1: float, split: str = "split-1") -> str:
        run = client.create_run("0")
        return str(client.create_model_version(NAME, source=str(tmp_path / "model"), run_id=run.info.run_id,
                                           tags={"fused.f1_weighted": str(f1), "git.commit": "c0ffee" * 7,
                                                 "dvc.data/processed.md5": split}).version)

    def command(*args: str) -> subprocess.CompletedProcess:
        """`python -m product_classifier.tracking.promotion ARGS` in this process (its exit status and output as the
        command's; the command itself, in a process of its own, is test_no_registry_is_a_one_line_error's)."""
        with monkeypatch.context() as patch:
            patch.chdir(tmp_path)
            patch.setenv("MLFLOW_TRACKING_URI", uri)
            patch.setenv("MLFLOW_EXPERIMENT_NAME", NAME)
            try:
                promotion.main(list(args))
                status, message = 0, ""
            except SystemExit as exit_:  # sys.exit("message"): status 1, the message on stderr
                status, message = (1, exit_.code) if isinstance(exit_.code, str) else (exit_.code or 0, "")
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, out, err + message)

    return client, register, command


def aliases(client) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def test_promotion_moves_champion_only_when_f1_holds_and_show_says_why(registry):
    client, register, command = registry
    first = register(0.80)
    result = command("promote")
    assert result.returncode == 0 and "no champion yet" in result.stdout, result.stderr
    assert aliases(client) == {"champion": first}

    worse = register(0.78)  # drops 0.02 > 0.01
    result = command("promote")
    assert result.returncode == 1 and "beyond tolerance" in result.stderr and "Traceback" not in result.stderr
    assert aliases(client) == {"champion": first, "challenger": worse}

    close = register(0.795)  # drops 0.005 <= 0.01
    result = command("promote")
    assert result.returncode == 0 and "within tolerance" in result.stdout, result.stderr
    assert aliases(client)["champion"] == close
    tags = client.get_model_version(NAME, close).tags
    assert tags["promotion.decision"] == "champion" and tags["promotion.previous_champion"] == first

    other_split = register(0.99, split="split-2")
    assert command("promote").returncode == 1
    assert aliases(client) == {"champion": close, "challenger": other_split}

    shown = command("show")
    assert shown.returncode == 0
    assert f"champion: {NAME} version {close}" in shown.stdout and "within tolerance" in shown.stdout
    assert f"challenger: {NAME} version {other_split}" in shown.stdout and "different test split" in shown.stdout


def test_an_explicit_version_and_tolerance(registry):
    client, register, command = registry
    first, _ = register(0.80), register(0.70)
    assert command("promote", "--version", first).returncode == 0
    assert command("promote", "--tolerance", "0.2").returncode == 0
    assert aliases(client)["champion"] == "2"


def test_no_registry_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "product_classifier.tracking.promotion", "promote"], cwd=tmp_path,
                            env={**env(), "MLFLOW_TRACKING_URI": "none"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "tracking is off" in result.stderr and "Traceback" not in result.stderr
