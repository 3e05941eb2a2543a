"""The served runtime (ONNX Runtime) gives Keras's answers, and serving runs without Keras or TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import PROJECT
from product_classifier import paths
from product_classifier.inference.imagestore import ImageStore
from product_classifier.inference.predictor import Predictor
from product_classifier.pipeline import evaluation
from product_classifier.pipeline.keras_reference import load_keras
from product_classifier.pipeline.processed import Processed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# Largest difference of any probability, ONNX Runtime FP32 against Keras on TensorFlow: both run the same
# float32 graph; kernels differ in summation order only (measured: about 1e-6 on the sample).
TOLERANCE = 1e-4


def test_onnx_runtime_matches_keras_on_the_test_split(tiny_repo):
    store = ImageStore(paths.images_url(tiny_repo / "data/raw", "train"))
    products, _ = evaluation.test_products(Processed(tiny_repo / "data/processed"), store)
    served, keras_ = Predictor.load(tiny_repo / "models"), load_keras(tiny_repo / "models")
    ours = [p for i in range(0, len(products), 64) for p in served.predict(products[i : i + 64], strict_image=False)]
    ref = [p for i in range(0, len(products), 64) for p in keras_.predict(products[i : i + 64], strict_image=False)]
    assert len(ours) == len(ref) == len(products) > 50
    for a, b in zip(ours, ref, strict=True):
        assert a.modalities == b.modalities
        assert a.code == b.code
        assert a.text.argmax() == b.text.argmax()
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(a.text, b.text, atol=TOLERANCE, rtol=0)
        if a.image is not None:
            assert a.image.argmax() == b.image.argmax()
            np.testing.assert_allclose(a.image, b.image, atol=TOLERANCE, rtol=0)


def test_serving_loads_and_predicts_without_keras_or_tensorflow(tiny_models):
    """The serving stack, its model loaded and one prediction made, imports neither Keras nor TensorFlow (nor
    scikit-learn or pandas, which only the pipeline and batch scoring install; SciPy stays, for the drift test)."""
    code = f"""
import json, sys
from serving.app import create_app
from product_classifier.inference.predictor import Predictor, Product
p = Predictor.load({str(tiny_models)!r}).predict([Product("Piscine gonflable", "bleue")])[0]
print(json.dumps({{"code": p.code, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow", "tf2onnx", "sklearn", "pandas"))}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] > 0
    assert result["loaded"] == []


def test_a_saved_model_is_the_same_bytes_whenever_it_is_saved(tmp_path):
    """dvc.lock hashes the model folders: the same weights saved a second later, by another model object,
    must be the same bytes (Keras stamps the time and object ids into the archive), and still load."""
    import time

    import keras

    from product_classifier.pipeline.export import save_keras

    def build() -> keras.Model:  # a fresh model each time (as each training run): other objects, other ids
        inputs = keras.Input((4,), name="x")  # an LSTM, as the text model: its cell shares objects with it
        lstm = keras.layers.LSTM(2, kernel_initializer="ones", recurrent_initializer="ones", name="lstm")
        out = keras.layers.Dense(3, kernel_initializer="ones", name="out")(lstm(keras.layers.Reshape((4, 1), name="r")(inputs)))
        return keras.Model(inputs, out, name="m")

    model = build()
    first, second = tmp_path / "first.keras", tmp_path / "second.keras"
    save_keras(model, first)
    model = build()
    started = int(time.time())
    while int(time.time()) == started:  # the archive's times have a resolution of two seconds; Keras's, one
        time.sleep(0.05)
    time.sleep(2)
    save_keras(model, second)
    assert first.read_bytes() == second.read_bytes()
    x = np.arange(8, dtype="float32").reshape(2, 4)
    np.testing.assert_array_equal(keras.saving.load_model(second)(x), model(x))
