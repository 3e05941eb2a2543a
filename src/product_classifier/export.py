"""Exporting a trained Keras model to ONNX, the format serving runs (with ONNX Runtime, no TensorFlow).

Keras's own `model.export(format="onnx")` does it (through tf2onnx under TensorFlow), except that it
leaves tensors a layer computes once (the `Normalization` mean and variance of the image head) as extra
graph inputs. For such a model, under TensorFlow, the forward pass is traced, every captured value
frozen into a constant and the frozen graph converted with tf2onnx (the text model's LSTM loop does
not survive that freezing, hence not always). The export is checked against Keras on `example`
before it is written.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from .atomic import atomic_path
from .errors import DataError

OPSET = 17
TOLERANCE = 1e-4  # max abs difference of probabilities, ONNX Runtime vs Keras, on the export check


def _onnx_bytes_tf(model: keras.Model) -> bytes:
    import tensorflow as tf
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    (inp,) = model.inputs
    spec = tf.TensorSpec(inp.shape, inp.dtype, name=inp.name)
    frozen = convert_variables_to_constants_v2(tf.function(lambda x: model(x, training=False)).get_concrete_function(spec))
    patch_tf2onnx()  # tf2onnx still looks for numpy 1 names
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs], opset=OPSET)
    return proto.SerializeToString()


def _onnx_bytes(model: keras.Model, tmp: Path) -> bytes:
    import onnx

    model.export(tmp, format="onnx", verbose=False)
    data = tmp.read_bytes()
    if len(onnx.load_from_string(data).graph.input) > len(model.inputs) and keras.backend.backend() == "tensorflow":
        return _onnx_bytes_tf(model)
    return data


def export_onnx(model: keras.Model, path: Path, example: np.ndarray) -> float:
    """Write `model` as ONNX to `path` (atomically); return the max probability difference on `example`."""
    from .runtime import onnx_forward

    expected = np.asarray(model(example, training=False))  # also marks the model as called
    with atomic_path(path) as tmp:
        tmp.write_bytes(_onnx_bytes(model, tmp))
        diff = float(np.abs(onnx_forward(tmp, threads=1)(example) - expected).max())
        if not diff <= TOLERANCE:
            raise DataError(f"{path.name}: ONNX export differs from the Keras model by {diff:.2g} (> {TOLERANCE})")
    return diff
