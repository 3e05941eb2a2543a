"""Choosing the Keras backend, and seeding it for deterministic runs."""

from __future__ import annotations

import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def use_backend(name: str | None = None) -> str:
    """Select the Keras backend before keras is imported (`KERAS_BACKEND` wins if set)."""
    name = os.environ.get("KERAS_BACKEND") or name or "tensorflow"
    if name not in BACKENDS:
        from .errors import ParamError

        raise ParamError(f"Keras backend {name!r} is not one of {', '.join(BACKENDS)}")
    os.environ["KERAS_BACKEND"] = name
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise RuntimeError(f"keras already imported with backend {keras.backend.backend()}, not {name}")
    return name


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend, and ask TensorFlow for deterministic kernels."""
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif keras.backend.backend() == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
