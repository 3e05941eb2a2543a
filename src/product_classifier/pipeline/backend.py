"""Choosing the Keras backend, seeding it for deterministic runs, and spreading training over accelerators."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from product_classifier.pipeline.params import BACKENDS


def use_backend(name: str | None = None) -> str:
    """Select the Keras backend before keras is imported (`KERAS_BACKEND` wins if set)."""
    name = os.environ.get("KERAS_BACKEND") or name or "tensorflow"
    if name not in BACKENDS:
        from product_classifier.errors import ParamError

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


def accelerators() -> list[str]:
    """The GPUs/TPUs the current Keras backend sees (CPUs never count)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "TPU")]
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.id}" for d in jax.devices() if d.platform != "cpu"]
    return []  # torch: Keras has no multi-device training for it; one device is used


def distribution_kind(backend: str, devices: int) -> str | None:
    """How training spreads over `devices`: None (one device, unchanged), `mirrored` or `data_parallel`."""
    if devices <= 1:
        return None
    return {"tensorflow": "mirrored", "jax": "data_parallel"}.get(backend)


@contextlib.contextmanager
def data_parallel(devices: list[str] | None = None) -> Iterator[int]:
    """Build, compile and fit models inside this block to train data-parallel on every accelerator.

    TensorFlow: `tf.distribute.MirroredStrategy`; JAX: `keras.distribution.DataParallel`. With
    one device or none (or under torch) it does nothing, so results are exactly those of a plain
    run. `train.batch_size` stays the global batch, split across the replicas. Yields the
    number of replicas.
    """
    import keras

    devices = accelerators() if devices is None else devices
    kind = distribution_kind(keras.backend.backend(), len(devices))
    if kind is None:
        yield 1
    elif kind == "mirrored":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy(devices).scope():
            yield len(devices)
    else:
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
