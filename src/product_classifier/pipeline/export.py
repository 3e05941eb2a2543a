"""Writing a trained Keras model: its `.keras` file, byte for byte the same for the same weights, and its ONNX
export, the format serving runs (with ONNX Runtime, no TensorFlow).

Under TensorFlow, tf2onnx's `from_keras` freezes the forward pass (every weight and every tensor a layer
computed once, such as the image head's `Normalization` mean and variance, becomes a constant) and converts
it, with the few graph optimizers that matter here (`_optimizers`). Under another backend a TensorFlow
process converts the saved `.keras` file. The export is checked against Keras on `example` before it is
written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np

from product_classifier.atomic import atomic_path
from product_classifier.errors import DataError

OPSET = 17
TOLERANCE = 1e-4  # max abs difference of probabilities, ONNX Runtime vs Keras, on the export check
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


def _renumbered(config, ids: dict):
    """`config` with each `shared_object_id` (Keras writes the Python object's id(), new every process)
    replaced by its rank of first appearance: the same objects stay shared, the numbers stay the same."""
    if isinstance(config, dict):
        return {key: ids.setdefault(value, len(ids) + 1) if key == "shared_object_id" else _renumbered(value, ids)
                for key, value in config.items()}
    if isinstance(config, list):
        return [_renumbered(value, ids) for value in config]
    return config


def save_keras(model: keras.Model, path: Path) -> None:
    """`model.save(path)`, then the archive made reproducible: Keras stamps the save time into `metadata.json`
    (`date_saved`) and onto the weights' zip entry, and Python object ids into `config.json`, so two saves
    of the same weights differed. Entries keep their order, content and compression; times and ids go."""
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumbered(json.loads(data), {})).encode()
            entry = zipfile.ZipInfo(info.filename, ZIP_EPOCH)
            entry.compress_type, entry.external_attr = info.compress_type, info.external_attr
            archive.writestr(entry, data)


def _optimizers() -> dict:
    """tf2onnx's optimizers for these models: the layout transposes around the convolutions cancelled, constants
    folded, identities and back-to-back casts and transposes removed. tf2onnx's default list (twelve) copies the
    whole graph, weights included, before each one; for VGG16 it took 1.5 GiB of peak memory and 1 to 5 s more
    for the same outputs, latency and graph (48 nodes against 47): benchmarks/bench_export.py, docs/performance.md."""
    from tf2onnx.optimizer.back_to_back_optimizer import BackToBackOptimizer
    from tf2onnx.optimizer.const_fold_optimizer import ConstFoldOptimizer
    from tf2onnx.optimizer.identity_optimizer import IdentityOptimizer
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    return {"optimize_transpose": TransposeOptimizer, "fold_constants": ConstFoldOptimizer,
            "remove_identity": IdentityOptimizer, "remove_back_to_back": BackToBackOptimizer}


def _onnx_bytes_tf(model: keras.Model, optimizers: dict | None) -> bytes:
    import tensorflow as tf
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    patch_tf2onnx()  # tf2onnx still looks for numpy 1 names
    specs = [tf.TensorSpec(inp.shape, inp.dtype, name=inp.name) for inp in model.inputs]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=specs, opset=OPSET, optimizers=optimizers)
    return proto.SerializeToString()


def _onnx_bytes_via_tensorflow(model: keras.Model, tmp: Path) -> bytes:
    """Under another backend (JAX would need jax2onnx), a TensorFlow process exports the saved model:
    `.keras` files are backend-agnostic."""
    keras_file = tmp.with_name(tmp.name + ".keras")
    model.save(keras_file)
    try:
        result = subprocess.run([sys.executable, "-m", __name__, str(keras_file), str(tmp)], capture_output=True,
                                text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    finally:
        keras_file.unlink(missing_ok=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise DataError(f"{tmp.name}: ONNX export under TensorFlow failed: {last}")
    return tmp.read_bytes()


def _onnx_bytes(model: keras.Model, tmp: Path) -> bytes:
    if keras.backend.backend() != "tensorflow":
        return _onnx_bytes_via_tensorflow(model, tmp)
    return _onnx_bytes_tf(model, _optimizers())


def export_onnx(model: keras.Model, path: Path, example: np.ndarray) -> float:
    """Write `model` as ONNX to `path` (atomically); return the max probability difference on `example`."""
    from product_classifier.inference.runtime import onnx_forward

    expected = np.asarray(model(example, training=False))  # also marks the model as called
    with atomic_path(path) as tmp:
        tmp.write_bytes(_onnx_bytes(model, tmp))
        diff = float(np.abs(onnx_forward(tmp, threads=1)(example) - expected).max())
        if not diff <= TOLERANCE:
            raise DataError(f"{path.name}: ONNX export differs from the Keras model by {diff:.2g} (> {TOLERANCE})")
    return diff


if __name__ == "__main__":  # python -m product_classifier.pipeline.export MODEL.keras OUT.onnx (run under TensorFlow)
    from product_classifier.pipeline import models  # noqa: F401  (registers the custom layers the saved model names)

    model = keras.saving.load_model(sys.argv[1])
    (inp,) = model.inputs
    model(np.zeros((1, *inp.shape[1:]), inp.dtype), training=False)  # export needs a called model
    out = Path(sys.argv[2])
    out.write_bytes(_onnx_bytes(model, out))
