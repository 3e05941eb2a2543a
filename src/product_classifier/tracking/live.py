"""Tracking wired in by the stage scripts: dvclive's per-epoch curves and a summary that describes the
model that is kept, then the stage's MLflow run (`tracking`).

Training and evaluation know nothing of tracking; a stage opens a `recorder`, passes
`epoch_logger(live)` into training (or records an `Evaluation`) and logs to MLflow afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dvclive import Live

from product_classifier import paths
from product_classifier.atomic import atomic_path
from product_classifier.tracking import client
from product_classifier.tracking.provenance import declared_params

if TYPE_CHECKING:  # types only: a training stage must not import (and depend on) evaluation
    from product_classifier.pipeline.evaluation import Evaluation
    from product_classifier.pipeline.params import Params


@contextlib.contextmanager
def recorder(folder: Path, params: dict | None = None) -> Iterator[Live]:
    """A dvclive `Live` writing into a temporary sibling of `folder`, renamed over it only on success."""
    with atomic_path(folder, is_dir=True) as tmp:
        live = Live(dir=str(tmp), dvcyaml=None, save_dvc_exp=False, report=None)
        if params:
            live.log_params(params)
        yield live
        live.end()


def training_params(p: Params, section: dict) -> dict:
    return {"epochs": p.train.epochs, "batch_size": p.train.batch_size, "seed": p.train.seed, **section}


def epoch_logger(live: Live) -> Callable[[int, dict], None]:
    """`on_epoch` for training: each epoch's train/val loss and accuracy as one dvclive step (the curves)."""

    def log(epoch: int, metrics_by_split: dict[str, dict[str, float]]) -> None:
        for split, metrics in metrics_by_split.items():
            for name, value in metrics.items():
                live.log_metric(f"{split}/{name}", value)
        live.next_step()

    return log


def record_training(live: Live, summary: dict) -> None:
    """The summary's top-level `train`/`val` become the restored best epoch's (the saved model's), not
    the last epoch's that dvclive holds; `best` says which epoch that was and how many ran."""
    live.summary.update(summary)


def tracked_training(stage: str, train: Callable, out: Path, p: Params, model: str, artifact: str) -> dict:
    """Run `train(processed, out, p, on_epoch)` for `stage` (train.<model> its section) with its curves and
    best-epoch summary in metrics/<stage>/, then its MLflow run with `out/<artifact>` attached."""
    metrics = paths.METRICS / stage
    with recorder(metrics, training_params(p, getattr(p.train, model).model_dump())) as live:
        summary = train(paths.PROCESSED, out, p, epoch_logger(live))
        record_training(live, summary)
    client.log_stage(stage, declared_params(stage), metrics, [out / artifact])
    return summary


def record_evaluation(live: Live, ev: Evaluation) -> None:
    live.summary.update(ev.summary)
    live.log_sklearn_plot("confusion_matrix", ev.actual, ev.predicted, name="confusion_matrix.json")
    live.log_plot("per_class_f1", ev.per_class, x="f1", y="prdtypecode", template="bar_horizontal",
                  title="Fused model: F1 per class (test split)")
    ev.predictions.to_csv(Path(live.dir) / paths.PREDICTIONS_FILE)
