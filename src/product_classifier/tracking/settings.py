"""Where the pipeline's MLflow runs go: MLFLOW_* settings from the environment, else the root's `.env`.

- `MLFLOW_TRACKING_URI`: default the sqlite store `mlflow.db` in the repository root (`paths.repo_root`, ignored
  by git) whatever the working directory: queued experiments (`dvc exp run --queue`, run in a copy under
  `.dvc/tmp/exps/`) log there too; `none` (or `off`) turns tracking off.
- `MLFLOW_EXPERIMENT_NAME`: default `ProductCodeClassifier`; also the registered model's name.
- `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`: basic auth (DagsHub: user and token).

The `.env` file (written by `make dagshub`) is parsed by python-dotenv; only its MLFLOW_* entries are read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dotenv import dotenv_values

from product_classifier.paths import repo_root

STORE_FILE = "mlflow.db"
DOTENV_FILE = ".env"
DEFAULT_EXPERIMENT = "ProductCodeClassifier"
OFF = {"none", "off", "false", "0", "disabled"}


def default_uri(env: dict[str, str] | None = None) -> str:
    return f"sqlite:///{repo_root(env=env) / STORE_FILE}"


def dotenv(path: Path | None = None) -> dict[str, str]:
    """MLFLOW_* entries of the root's `.env` file; nothing else is read."""
    path = path or repo_root() / DOTENV_FILE
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if k.startswith("MLFLOW_") and v is not None}


def setting(name: str, default: str, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    value = env.get(name) or dotenv().get(name) or default
    return value.strip()


def tracking_uri(env: dict[str, str] | None = None) -> str | None:
    """The tracking URI, or None when tracking is off."""
    uri = setting("MLFLOW_TRACKING_URI", default_uri(env), env)
    return None if uri.lower() in OFF else uri


def experiment_name(env: dict[str, str] | None = None) -> str:
    return setting("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT, env)


def redact(uri: str) -> str:
    """A URI fit for logs: no user:password@."""
    return re.sub(r"//[^/@]+@", "//***@", uri)
