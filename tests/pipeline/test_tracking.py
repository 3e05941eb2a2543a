"""MLflow tracking: real `mlflow server`, real pipeline runs, real outages (closed port, a server that 404s)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, copy_repo, env, free_port, quality, ran, sh
from product_classifier import paths
from product_classifier.tracking import client as tracking_client
from product_classifier.tracking import provenance, settings

TRACKED_STAGES = ["evaluate", "fuse", "train_lstm", "train_vgg16"]


def write_dvclive(folder: Path) -> Path:
    """The files dvclive leaves for a 3-epoch training."""
    (folder / "plots/metrics/train").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(
        {"train": {"accuracy": 0.7}, "step": 2, "best": {"best_epoch": 3, "val_loss": 1.25}}))
    (folder / "plots/metrics/train/accuracy.tsv").write_text("step\taccuracy\n0\t0.1\n1\t0.5\n2\t0.7\n")
    return folder


# --- pure parts -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (None, "sqlite:///{root}/mlflow.db"), ("none", None), ("OFF", None), ("false", None),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_tracking_uri(value, expected, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env around
    expected = expected and expected.format(root=tmp_path.resolve())
    assert settings.tracking_uri({} if value is None else {"MLFLOW_TRACKING_URI": value}) == expected


def test_default_store_and_dotenv_are_the_repository_roots_from_anywhere(monkeypatch, tmp_path):
    root = tmp_path / "repo"
    (root / ".dvc").mkdir(parents=True)
    (root / ".env").write_text("MLFLOW_EXPERIMENT_NAME=FromRoot\n")
    queued = root / ".dvc/tmp/exps/tmpab12/stages"  # where `dvc exp run --queue` runs a stage
    queued.mkdir(parents=True)
    (queued.parent / ".dvc").mkdir()  # the executor's copy is a DVC repository of its own
    for cwd, environ in ((root / ".dvc", {}), (queued, {}), (queued, {"DVC_ROOT": str(root)}),
                     (tmp_path, {"DVC_ROOT": str(root)})):
        monkeypatch.chdir(cwd)
        assert paths.repo_root(env=environ) == root.resolve(), cwd
        assert settings.default_uri(environ) == f"sqlite:///{root.resolve()}/mlflow.db"
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(queued)
    assert settings.experiment_name({}) == "FromRoot"


def test_dotenv_gives_mlflow_settings_only(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SECRET_KEY=x\nexport MLFLOW_TRACKING_URI='https://dagshub.com/o/r.mlflow'\n"
                                   "MLFLOW_EXPERIMENT_NAME=Other  # a comment\n# MLFLOW_TRACKING_USERNAME=commented-out\n")
    assert settings.dotenv() == {"MLFLOW_TRACKING_URI": "https://dagshub.com/o/r.mlflow", "MLFLOW_EXPERIMENT_NAME": "Other"}
    assert settings.tracking_uri({}) == "https://dagshub.com/o/r.mlflow"
    assert settings.tracking_uri({"MLFLOW_TRACKING_URI": "none"}) is None  # the environment wins
    assert settings.experiment_name({}) == "Other"


def test_redact_hides_credentials():
    assert settings.redact("https://user:tok3n@dagshub.com/o/r.mlflow") == "https://***@dagshub.com/o/r.mlflow"


def test_metrics_from_dvclive_files(tmp_path):
    folder = write_dvclive(tmp_path / "m")
    assert tracking_client.summary_metrics(folder) == {"train/accuracy": 0.7, "best/best_epoch": 3.0, "best/val_loss": 1.25}
    assert tracking_client.epoch_metrics(folder) == {"train/accuracy": [(0, 0.1), (1, 0.5), (2, 0.7)]}


def test_data_hashes_from_dvc_lock(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "download": {"outs": [{"path": "data/raw", "md5": "abc.dir"}]},
        "preprocess": {"outs": [{"path": "data/processed", "md5": "def.dir"}]},
    }}))
    assert provenance.data_hashes(lock) == {"dvc.data/raw.md5": "abc.dir", "dvc.data/processed.md5": "def.dir"}


# --- local store and outages, in process ----------------------------------------------------------

def test_default_store_is_sqlite_in_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    folder = write_dvclive(tmp_path / "metrics")
    assert tracking_client.log_stage("train_lstm", {"train": {"epochs": 3}}, folder)
    assert (tmp_path / "mlflow.db").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient("sqlite:///mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("ProductCodeClassifier").experiment_id])
    assert run.data.params == {"train.epochs": "3"}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/accuracy")] == [0.1, 0.5, 0.7]


def test_tracking_off_writes_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "none")
    assert not tracking_client.log_stage("evaluate", {"evaluate": {}}, write_dvclive(tmp_path / "m"), model=tmp_path)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert capsys.readouterr().err == ""


def test_unreadable_inputs_never_fail_the_stage(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    (tmp_path / "dvc.lock").write_text("stages: [unbalanced")
    assert not tracking_client.log_stage("fuse", {"fuse": {}}, artifacts=[])
    assert capsys.readouterr().err.count("warning: MLflow tracking skipped for stage fuse") == 1


class NotFound(http.server.BaseHTTPRequestHandler):
    """A tracking server older than the client: every endpoint answers 404."""

    hits = 0
    authorization: list[str | None] = []

    def _404(self):
        type(self).hits += 1
        type(self).authorization.append(self.headers.get("Authorization"))
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>404 page not found</html>")

    do_GET = do_POST = do_PATCH = do_PUT = _404

    def log_message(self, *args):
        pass


def test_server_lacking_the_api_costs_one_request_and_one_warning(monkeypatch, tmp_path, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:s3cret@127.0.0.1:{server.server_port}")
    try:
        assert not tracking_client.log_stage("train_lstm", {"train": {"epochs": 3}}, write_dvclive(tmp_path / "m"))
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert err.count("warning:") == 1, err
    assert "not logged for stage train_lstm: the run, params and metrics" in err
    assert "s3cret" not in err
    assert NotFound.hits <= 2  # stopped at the first failure


def test_dotenv_credentials_are_sent_and_the_environment_is_left_as_it_was(monkeypatch, tmp_path, capsys):
    """`.env`'s credentials and the short HTTP defaults reach MLflow's requests, and only them: the
    process's environment is the same before and after (no process-wide defaults)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    NotFound.authorization = []
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MLFLOW_TRACKING_USERNAME=alice\nMLFLOW_TRACKING_PASSWORD=from-dotenv\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_port}")
    before = dict(os.environ)
    try:
        assert not tracking_client.log_stage("fuse", {"fuse": {}}, artifacts=[])
    finally:
        server.shutdown()
    assert dict(os.environ) == before
    assert NotFound.authorization and NotFound.authorization[0] == "Basic " + base64.b64encode(b"alice:from-dotenv").decode()
    assert "from-dotenv" not in capsys.readouterr().err


# --- the real pipeline against a real server -----------------------------------------------------

@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts")],
        cwd=home, env=env(), stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    import requests

    while True:
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def tracked_repo(tiny_repo, tmp_path_factory, mlflow_server):
    """A copy of the kept tiny pipeline (built with tracking off), every stage forced again with
    MLFLOW_TRACKING_URI pointing at the server; returns (repo, the rerun's output)."""
    repo = copy_repo(tiny_repo, tmp_path_factory.mktemp("tracked") / "repo")
    out = sh("dvc repro --force", repo, extra_env={"MLFLOW_TRACKING_URI": mlflow_server}).stdout
    return repo, out


@pytest.mark.e2e
def test_a_forced_rerun_with_tracking_on_gives_identical_quality_and_predictions(tiny_repo, tracked_repo):
    """Seeded, deterministic training: every stage again, in another process, gives what the kept build gave
    (and logging to a server changes no number)."""
    repo, out = tracked_repo
    assert len(ran(out)) == 7
    assert quality(repo) == quality(tiny_repo)
    predictions = paths.PREDICTIONS / paths.PREDICTIONS_FILE
    assert (repo / predictions).read_bytes() == (tiny_repo / predictions).read_bytes()


@pytest.mark.e2e
def test_repro_logs_runs_and_registers_the_model(tracked_repo, mlflow_server):
    from mlflow.tracking import MlflowClient

    repo, _ = tracked_repo
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("ProductCodeClassifier")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == TRACKED_STAGES
    commit = sh("git rev-parse HEAD", repo).stdout.strip()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    processed_md5 = next(o["md5"] for o in lock["preprocess"]["outs"] if o["path"] == "data/processed")
    for name, run in runs.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["mlflow.source.git.commit"] == commit
        assert run.data.tags["dvc.data/processed.md5"] == processed_md5

    lstm = runs["train_lstm"]
    assert lstm.data.params["train.epochs"] == "3" and "train.lstm.units" in lstm.data.params
    history = client.get_metric_history(lstm.info.run_id, "val/accuracy")
    assert [m.step for m in history] == list(range(int(lstm.data.metrics["best/epochs_run"])))
    assert f"artifacts/{paths.VOCAB_FILE}" in [a.path for a in client.list_artifacts(lstm.info.run_id, "artifacts")]

    ev = runs["evaluate"]
    metrics = json.loads((repo / "metrics/evaluate/metrics.json").read_text())
    assert ev.data.metrics["fused/f1_weighted"] == pytest.approx(metrics["fused"]["f1_weighted"])
    plots = [a.path for a in client.list_artifacts(ev.info.run_id, "metrics/plots/sklearn")]
    assert "metrics/plots/sklearn/confusion_matrix.json" in plots
    assert {a.path for a in client.list_artifacts(ev.info.run_id, "model")} >= {"model/lstm", "model/vgg16", "model/fusion"}

    [version] = client.search_model_versions("name='ProductCodeClassifier'")
    assert version.run_id == ev.info.run_id and version.tags["git.commit"] == commit
    fusion = client.download_artifacts(ev.info.run_id, f"model/{paths.FUSION}/{paths.FUSION_FILE}", str(repo.parent))
    assert Path(fusion).read_bytes() == (repo / paths.MODELS / paths.FUSION / paths.FUSION_FILE).read_bytes()


@pytest.mark.e2e
def test_repro_survives_a_tracking_outage(tracked_repo, tmp_path):
    """Closed port: the stages finish with one warning each, each given up at the run's creation (so after
    MLflow's one retry, not its default minutes of them: the retry bound itself is counted in requests by
    test_server_lacking_the_api_costs_one_request_and_one_warning). Run on fuse and evaluate: the training
    stages log through the same `tracking_client.log_stage` after training, and would only add a minute of it."""
    repo = copy_repo(tracked_repo[0], tmp_path / "repo")
    stages = ["fuse", "evaluate"]  # pipeline order
    result = sh(f"dvc repro --force --single-item {' '.join(stages)}", repo,
                extra_env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    out = result.stdout + result.stderr
    assert ran(out) == stages, out[-3000:]
    warnings = [line for line in out.splitlines() if line.startswith("warning: MLflow")]
    assert len(warnings) == len(stages), out[-3000:]
    assert all("not logged for stage" in w and "the run, params and metrics" in w for w in warnings)
    assert sh("dvc status -q", repo, check=False).returncode == 0  # fuse came out as before: predict is up to date


def test_stage_scripts_do_not_need_mlflow_when_off(tmp_path):
    """With tracking off, tracking never imports mlflow (fast stages, serving images without it)."""
    code = ("import os, sys; os.environ['MLFLOW_TRACKING_URI'] = 'none'; from product_classifier.tracking import client; "
            "client.log_stage('fuse', {}, artifacts=[]); sys.exit('mlflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0
