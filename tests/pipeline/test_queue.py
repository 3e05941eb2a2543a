"""The DVC experiment queue: two experiments run at once (`dvc queue start -j 2`) in one repository,
each with its own params and metrics, without clashing over outputs, metrics or caches, and each
tracked in the repository root's MLflow store (not in the throw-away copy it ran in)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import copy_repo, sh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EPOCHS = {"one-epoch": 1, "two-epochs": 2}
MLFLOW_EXPERIMENT = "QueuedFromRootEnv"


def queue_done(repo) -> bool:
    status = sh("dvc queue status", repo).stdout
    return not any(word in status for word in ("Queued", "Running"))


def experiments(repo) -> dict[str, dict]:
    """name -> {params, metrics} from `dvc exp show --json`."""
    found = {}
    for baseline in json.loads(sh("dvc exp show --json", repo).stdout):
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                found[rev["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": {path: m["data"] for path, m in (data.get("metrics") or {}).items()},
                }
    return found


def outputs(repo) -> dict[str, bytes]:
    """The workspace's pipeline outputs and metrics, file by file."""
    return {str(f.relative_to(repo)): f.read_bytes() for folder in ("models", "metrics", "data/predictions")
            for f in sorted((repo / folder).rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def queued(tiny_repo, tmp_path_factory):
    """A copy of the kept tiny pipeline, committed, after two queued experiments ran (their data stages are
    in the cache: each reruns training and after); the root's (git-ignored) .env names the experiment.
    Returns (repo, the workspace's outputs before the queue ran)."""
    repo = copy_repo(tiny_repo, tmp_path_factory.mktemp("queue") / "repo")
    sh("git add -A && git commit -qm 'tiny pipeline, reproduced'", repo)
    (repo / ".env").write_text(f"MLFLOW_EXPERIMENT_NAME={MLFLOW_EXPERIMENT}\n")
    before = outputs(repo)
    default_store = {"MLFLOW_TRACKING_URI": "", "MLFLOW_EXPERIMENT_NAME": ""}
    for name, epochs in EPOCHS.items():
        sh(f"dvc exp run --queue -n {name} -S train.epochs={epochs}", repo, extra_env=default_store)
    sh("dvc queue start -j 2", repo, extra_env=default_store)
    deadline = time.monotonic() + 600
    while not queue_done(repo):
        assert time.monotonic() < deadline, sh("dvc queue status", repo).stdout
        time.sleep(3)
    return repo, before


def test_two_queued_experiments_run_in_parallel_with_their_own_results(queued):
    repo, before = queued
    status = sh("dvc queue status", repo).stdout
    found = experiments(repo)
    assert set(found) >= set(EPOCHS), (status, list(found))
    for name, epochs in EPOCHS.items():
        exp = found[name]
        line = next(line for line in status.splitlines() if f" {name} " in line)
        assert "Success" in line, (line, sh(f"dvc queue logs {name}", repo, check=False).stdout[-3000:])
        assert exp["params"]["train"]["epochs"] == epochs
        for stage in ("train_lstm", "train_vgg16"):
            # Each experiment's training ran exactly its own number of epochs (patience 3 never stops it).
            assert exp["metrics"][f"metrics/{stage}/metrics.json"]["best"]["epochs_run"] == epochs, (name, stage)
        evaluated = exp["metrics"]["metrics/evaluate/metrics.json"]
        assert 0.0 < evaluated["fused"]["accuracy"] <= 1.0
    one, two = (found[name]["metrics"]["metrics/train_lstm/metrics.json"] for name in EPOCHS)
    assert one != two
    # The workspace is untouched by the queue: no experiment's outputs leaked into it.
    assert outputs(repo) == before


def test_queued_experiments_are_tracked_in_the_repository_roots_mlflow_store(queued):
    from mlflow.tracking import MlflowClient

    repo, _ = queued
    store = repo / "mlflow.db"
    assert store.is_file()
    assert not list((repo / ".dvc/tmp").rglob("mlflow.db"))
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)  # named by the root's .env
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    tracked = {(r.data.tags.get("dvc.exp_name"), r.data.tags["dvc.stage"]) for r in runs}
    for name in EPOCHS:
        for stage in ("train_lstm", "train_vgg16", "fuse", "evaluate"):
            assert (name, stage) in tracked, (name, stage, sorted(tracked))
    lstm = next(r for r in runs if r.data.tags.get("dvc.exp_name") == "two-epochs" and r.data.tags["dvc.stage"] == "train_lstm")
    assert lstm.data.metrics["best/epochs_run"] == 2
