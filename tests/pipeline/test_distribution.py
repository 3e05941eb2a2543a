"""Data-parallel training (`backend.data_parallel`): the device-count decision, and the real
TensorFlow and JAX mechanisms on two CPU devices standing in for two accelerators."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import PROJECT, env
from product_classifier.pipeline.backend import distribution_kind


@pytest.mark.parametrize(("backend", "devices", "kind"), [
    ("tensorflow", 0, None), ("tensorflow", 1, None), ("tensorflow", 2, "mirrored"), ("tensorflow", 8, "mirrored"),
    ("jax", 0, None), ("jax", 1, None), ("jax", 4, "data_parallel"),
    ("torch", 1, None), ("torch", 2, None),
])
def test_distribution_only_with_more_than_one_accelerator(backend, devices, kind):
    assert distribution_kind(backend, devices) == kind


# Fits a small model inside `data_parallel(devices)` with a ragged last batch (100 rows, batch 32)
# and reports how many replicas the backend actually trained on.
FIT = """
import json, numpy as np, keras
from product_classifier.pipeline.backend import accelerators, data_parallel
keras.utils.set_random_seed(0)  # the same weights on every run: the learning check below cannot flake
x = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
def fit():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0).history
    return model, history["loss"]
with data_parallel(DEVICES) as replicas:
    model, losses = fit()
    inside = REPLICAS_INSIDE
print(json.dumps({"replicas": replicas, "inside": inside, "after": REPLICAS_AFTER, "first_loss": float(losses[0]), "loss": float(losses[-1]),
                  "accelerators": len(accelerators())}))
"""
SETUP = {
    "tensorflow": ("import tensorflow as tf\n"
                   "cpu = tf.config.list_physical_devices('CPU')[0]\n"
                   "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"),
    "jax": "",
}
PROBES = {
    "tensorflow": ('["/cpu:0", "/cpu:1"]', "tf.distribute.get_strategy().num_replicas_in_sync",
                   "tf.distribute.get_strategy().num_replicas_in_sync"),
    "jax": ('keras.distribution.list_devices("cpu")', "len(model.weights[0].value.sharding.device_set)",
            "keras.distribution.distribution()"),
}


def run_fit(backend: str) -> dict:
    devices, inside, after = PROBES[backend]
    code = SETUP[backend] + textwrap.dedent(FIT).replace("DEVICES", devices).replace("REPLICAS_INSIDE", inside)
    code = code.replace("REPLICAS_AFTER", after)
    extra = {"KERAS_BACKEND": backend, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
             "PYTHONPATH": str(PROJECT / "src")}
    result = subprocess.run([sys.executable, "-c", code], env={**env(), **extra}, capture_output=True, text=True,
                            cwd=PROJECT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_tensorflow_mirrored_strategy_trains_on_two_devices():
    out = run_fit("tensorflow")
    assert out == {**out, "replicas": 2, "inside": 2, "after": 1, "accelerators": 0}
    assert out["loss"] < out["first_loss"]  # it learned


@pytest.mark.slow
def test_jax_data_parallel_trains_on_two_devices():
    out = run_fit("jax")
    # Inside: the weights live on both devices; afterwards the global distribution is reset.
    assert out == {**out, "replicas": 2, "inside": 2, "after": None, "accelerators": 0}
    assert out["loss"] < out["first_loss"]  # it learned
