"""The names of the tags a run and a registered model version carry: written by provenance.py, read by promotion."""

from __future__ import annotations

from product_classifier import paths

DVC_STAGE = "dvc.stage"
DVC_EXP_NAME = "dvc.exp_name"  # set by `dvc exp run`
SOURCE_NAME = "mlflow.source.name"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own, shown in its UI
GIT_COMMIT = "git.commit"
GIT_DIRTY = "git.dirty"
# The tags a registered model version copies from its run (the git and DVC ones).
VERSION_PREFIXES = ("git.", "dvc.")


def data_tag(out: str) -> str:
    """The tag holding the md5 dvc.lock records for the data folder `out`."""
    return f"dvc.{out}.md5"


# Which dvc.lock outputs identify the data a run saw (stage: out).
DATA_OUTS = {"download": paths.RAW.as_posix(), "preprocess": paths.PROCESSED.as_posix()}
# The data the test split comes from: two model versions compare only on the same one (promotion.py).
SPLIT = data_tag(paths.PROCESSED.as_posix())
