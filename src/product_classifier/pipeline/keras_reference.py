"""The predictor on the Keras models: the float reference the served ONNX runtime is checked against, and the
baseline benchmarks compare with (needs the `pipeline` extra; serving never imports it)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from product_classifier import paths
from product_classifier.inference import bundle
from product_classifier.inference.predictor import Models, Predictor
from product_classifier.inference.text import Vocabulary


def load_keras_models(models_dir: Path) -> Models:
    """Both models from their .keras files, each compiled for inference (`compile_inference`)."""
    bundle.check_files(models_dir, bundle.KERAS_FILES)
    import keras

    from product_classifier.pipeline.models import CaffePreprocess  # noqa: F401  (registers the custom layer)

    return Models(
        compile_inference(keras.saving.load_model(models_dir / paths.LSTM / paths.MODEL_FILE), "int32"),
        Vocabulary.load(models_dir / bundle.VOCAB),
        compile_inference(keras.saving.load_model(models_dir / paths.VGG16 / paths.MODEL_FILE), "float32"),
        bundle.image_size(models_dir),
    )


def load_keras(models_dir: str | os.PathLike) -> Predictor:
    """The served predictor's twin on the Keras models (float32 image model, same fusion)."""
    models_dir = Path(models_dir)
    served = bundle.load(models_dir, verify=False)  # the ONNX files it lists are not what runs here
    return Predictor(load_keras_models(models_dir), served.fusion, bundle.FLOAT32, served)


def compile_inference(model, dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    """`model`'s forward pass (inference mode) as one compiled function of a numpy batch, per backend.

    TensorFlow: a `tf.function` (one trace per new input signature, generalised to any batch size);
    JAX: `jax.jit` of the stateless call, batches padded to a power of two so few shapes compile; others
    (torch): Keras's own predict step. All skip `model.predict`'s per-call input pipeline and callbacks,
    which cost far more than the model itself on one item.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return lambda x: step(tf.convert_to_tensor(np.asarray(x, dtype=dtype))).numpy()
    if backend == "jax":
        import jax

        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
        step = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])

        def run(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=dtype)
            n = len(x)
            padded = 1 << max(0, (n - 1).bit_length())
            if padded != n:
                x = np.concatenate([x, np.zeros((padded - n, *x.shape[1:]), dtype=dtype)])
            return np.asarray(step(*state, x))[:n]

        return run
    return lambda x: np.asarray(model.predict_on_batch(np.asarray(x, dtype=dtype)))
