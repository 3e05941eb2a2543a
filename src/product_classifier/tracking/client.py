"""The MLflow client of the pipeline's stages: one run per stage, best effort.

Every MLflow call lives here (settings.py says where the store is, provenance.py what a run is tagged
with). A stage calls `log_stage(...)` once, after its outputs are written, so tracking reads the same
files DVC tracks (dvclive's metrics and plots, models/) and can never change or lose them.

A tracking outage never fails a stage: the first error stops all further MLflow calls of the
stage and prints one warning that says what was not logged.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from product_classifier.tracking import tags as tag
from product_classifier.tracking.provenance import run_tags
from product_classifier.tracking.settings import dotenv, experiment_name, redact, tracking_uri

# An unreachable server must cost seconds, not MLflow's default minutes of retries (7 x 120 s).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
MODEL_ARTIFACT = "model"


# --- what a run records (pure: files in, dicts out) ------------------------------------------

def flatten(d: dict, prefix: str = "", sep: str = ".") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def summary_metrics(metrics_dir: Path) -> dict[str, float]:
    """dvclive's metrics.json, flattened (`fused/f1_weighted`, `latency_ms` included)."""
    path = metrics_dir / "metrics.json"
    if not path.is_file():
        return {}
    flat = flatten(json.loads(path.read_text()), sep="/")
    return {k: float(v) for k, v in flat.items() if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}


def epoch_metrics(metrics_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """dvclive's per-step TSVs (`plots/metrics/train/accuracy.tsv` -> `train/accuracy`)."""
    root = metrics_dir / "plots" / "metrics"
    series = {}
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        name = tsv.relative_to(root).with_suffix("").as_posix()
        with open(tsv, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        column = tsv.stem
        series[name] = [(int(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]
    return series


def answered(exc: Exception) -> bool:
    """Whether an MLflow error came from a server that answered (as opposed to no connection)."""
    from mlflow.exceptions import RestException

    return isinstance(exc, RestException) or "failed with error code" in str(exc)


# --- the tracker -------------------------------------------------------------------------------

class Tracker:
    """A thin MlflowClient wrapper that turns itself off at the first error, with one warning."""

    def __init__(self, uri: str, experiment: str, out=None):
        self.uri, self.experiment, self.out = uri, experiment, out or sys.stderr
        self.failed = False
        self.server_answered = False  # the failure was an answer (say a 404), not an outage
        self._client = None

    @property
    def client(self):
        if self._client is None:
            logging.getLogger("urllib3").setLevel(logging.ERROR)  # no retry noise; we warn once
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    def steps(self, stage: str, steps: list[tuple[str, Callable[[], object]]]) -> bool:
        """Run (description, action) pairs in order; on the first error, warn once and skip the rest."""
        for i, (_, action) in enumerate(steps):
            if self.failed:
                return False
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - any tracking error must leave the stage intact
                self.failed = True
                self.server_answered = answered(exc)
                missed = ", ".join(w for w, _ in steps[i:])
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                print(f"warning: MLflow tracking at {redact(self.uri)} failed ({reason}); "
                      f"not logged for stage {stage}: {missed}. The stage's outputs and DVC metrics are complete; "
                      "set MLFLOW_TRACKING_URI=none to turn tracking off.", file=self.out, flush=True)
                return False
        return True

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        return exp.experiment_id if exp else self.client.create_experiment(self.experiment)

    def log_batch(self, run_id: str, params: dict, metrics: dict, series: dict) -> None:
        from mlflow.entities import Metric, Param

        ts = int(time.time() * 1000)
        ms = [Metric(k, v, ts, 0) for k, v in metrics.items() if k not in series]
        ms += [Metric(k, v, ts, step) for k, points in series.items() for step, v in points]
        ps = [Param(k, str(v)[:500]) for k, v in params.items()]
        for i in range(0, max(len(ms), len(ps), 1), 100):  # the REST API caps a batch's size
            self.client.log_batch(run_id, metrics=ms[i : i + 100], params=ps[i : i + 100])

    def register(self, run_id: str, artifact_uri: str, tags: dict) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.experiment, description="Fused LSTM + VGG16 product type classifier")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(
            self.experiment, source=f"{artifact_uri}/{MODEL_ARTIFACT}", run_id=run_id, tags=tags)
        print(f"MLflow: registered model {self.experiment} version {version.version}", file=self.out)


@contextlib.contextmanager
def client_environment(uri: str) -> Iterator[None]:
    """MLflow reads credentials and HTTP retry settings from `os.environ` at every request: lend it the
    root `.env`'s MLFLOW_* entries (credentials from `make dagshub`) and, for a server, the short HTTP
    defaults, for the duration of the block only, under whatever the environment already sets. The
    library sets no process-wide defaults: the environment is as it was afterwards."""
    lent = {k: v for k, v in dotenv().items() if k not in os.environ}
    if uri.startswith(("http://", "https://")):
        lent.update({k: v for k, v in HTTP_DEFAULTS.items() if k not in os.environ})
    os.environ.update(lent)
    try:
        yield
    finally:
        for key in lent:
            os.environ.pop(key, None)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """One writer at a time on a local sqlite store: experiments queued with `dvc queue start -j 2` share
    the root's `mlflow.db`, and two processes creating its tables at once collide (alembic's
    `table _alembic_tmp_experiments already exists`). Remote stores serialize on their own."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def log_stage(stage: str, params: dict, metrics: Path | None = None, artifacts: Iterable[Path] = (),
              model: Path | None = None, out=None) -> bool:
    """Log one stage's run: `params` (a stage passes `provenance.declared_params`: what dvc.yaml declares), per-epoch and final metrics, metric files and plots, artifacts;
    with `model` (a models/ folder), log it and register it as a new model version.
    Returns whether everything was logged (False when tracking is off or failed). Never raises."""
    uri = tracking_uri()
    if uri is None:
        return False
    try:
        with store_lock(uri), client_environment(uri):
            return _log_stage(Tracker(uri, experiment_name(), out), stage, params, metrics, artifacts, model)
    except Exception as exc:  # noqa: BLE001 - say, an unreadable metrics file: still never fail the stage
        print(f"warning: MLflow tracking skipped for stage {stage} ({type(exc).__name__}: {exc}); nothing logged.",
              file=out or sys.stderr, flush=True)
        return False


def _log_stage(tracker: Tracker, stage: str, params: dict, metrics: Path | None, artifacts: Iterable[Path],
               model: Path | None) -> bool:
    state: dict = {}
    summary = summary_metrics(metrics) if metrics else {}
    tags = run_tags(stage)

    def start():
        run = tracker.client.create_run(tracker.experiment_id(), run_name=stage, tags=tags)
        state["id"], state["artifacts"] = run.info.run_id, run.info.artifact_uri

    def log_files():
        if metrics and metrics.is_dir():
            tracker.client.log_artifacts(state["id"], str(metrics), "metrics")
        for path in artifacts:
            log = tracker.client.log_artifacts if path.is_dir() else tracker.client.log_artifact
            log(state["id"], str(path), "artifacts")

    steps = [
        ("the run", start),
        ("params and metrics", lambda: tracker.log_batch(state["id"], flatten(params),
                                                         summary, epoch_metrics(metrics) if metrics else {})),
        ("metric files, plots and artifacts", log_files),
    ]
    if model is not None:
        version_tags = {k: v for k, v in tags.items() if k.startswith(tag.VERSION_PREFIXES)}
        version_tags.update({k.replace("/", "."): str(v) for k, v in summary.items() if k.startswith("fused/f1")})
        steps += [
            ("the models/ folder", lambda: tracker.client.log_artifacts(state["id"], str(model), MODEL_ARTIFACT)),
            ("the model registration", lambda: tracker.register(state["id"], state["artifacts"], version_tags)),
        ]
    steps.append(("the run's end", lambda: tracker.client.set_terminated(state["id"])))
    ok = tracker.steps(stage, steps)
    if not ok and "id" in state and tracker.server_answered:
        # The server answers (say, a 404 on a newer API): close the run rather than leave it "running" (one try, silent).
        with contextlib.suppress(Exception):
            tracker.client.set_terminated(state["id"], status="FAILED")
    return ok
