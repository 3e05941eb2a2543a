"""The fused predictor: raw product in, class out. Loaded by `evaluate` and by serving alike."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths
from .atomic import read_json
from .errors import DataError, ImageError
from .fusion import Fusion
from .images import is_blank, load_image
from .labels import CLASSES, category
from .runtime import Forward
from .text import Vocabulary, clean_text

REQUIRED_FILES = (
    f"{paths.LSTM}/{paths.MODEL_FILE}", f"{paths.LSTM}/{paths.VOCAB_FILE}",
    f"{paths.VGG16}/{paths.MODEL_FILE}", f"{paths.VGG16}/{paths.META_FILE}",
    f"{paths.FUSION}/{paths.FUSION_FILE}",
)
FLOAT32, INT8 = "float32", "int8"  # the served image model's precision (INT8: fusion.json's `image_model`)
ONNX_FILES = (f"{paths.LSTM}/{paths.ONNX_FILE}", f"{paths.LSTM}/{paths.VOCAB_FILE}",
              f"{paths.VGG16}/{paths.ONNX_FILE}", f"{paths.VGG16}/{paths.META_FILE}")


@dataclass(frozen=True)
class Product:
    designation: str
    description: str | None = None
    image: bytes | str | os.PathLike | None = None


@dataclass(frozen=True)
class Prepared:
    """A product after the shared preprocessing: what the models actually see.

    `has_text` is false when the text has no usable word: `tokens` is then the explicit
    unknown-text input (one unknown word), as in training."""

    tokens: np.ndarray
    image: np.ndarray | None
    has_text: bool = True


@dataclass(frozen=True)
class Prediction:
    """`probabilities` are the fused ones when both inputs are usable, else those of the one that is.
    With neither, they are the text model's answer to unknown text (close to the training class mix)."""

    probabilities: np.ndarray
    text: np.ndarray
    image: np.ndarray | None
    has_text: bool = True

    @property
    def modalities(self) -> list[str]:
        return (["text"] if self.has_text else []) + (["image"] if self.image is not None else [])

    @property
    def code(self) -> int:
        return CLASSES[int(self.probabilities.argmax())]

    @property
    def confidence(self) -> float:
        return float(self.probabilities.max())

    def top_k(self, k: int = 3) -> list[dict]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [{"prdtypecode": CLASSES[i], "category": category(CLASSES[i]),
                 "probability": float(self.probabilities[i])} for i in order]


def _fusion_file(models_dir: Path) -> dict:
    _check_files(models_dir, REQUIRED_FILES[-1:])
    return read_json(models_dir / paths.FUSION / paths.FUSION_FILE)


def _check_files(models_dir: Path, files) -> None:
    missing = [f for f in files if not (models_dir / f).exists()]
    if missing:
        raise DataError(f"{models_dir}: missing model artifact(s) {', '.join(missing)}; run `dvc repro` or `dvc pull`")


def load_keras_steps(models_dir: Path) -> tuple:
    """(text forward, vocabulary, image forward, image size) from the Keras models: the reference the served
    runtime is checked against, and the baseline benchmarks compare with (needs the `pipeline` extra)."""
    _check_files(models_dir, REQUIRED_FILES[:4])
    import keras

    from .models import CaffePreprocess  # noqa: F401  (registers the custom layer)

    return (
        compile_inference(keras.saving.load_model(models_dir / paths.LSTM / paths.MODEL_FILE), "int32"),
        Vocabulary.load(models_dir / paths.LSTM / paths.VOCAB_FILE),
        compile_inference(keras.saving.load_model(models_dir / paths.VGG16 / paths.MODEL_FILE), "float32"),
        image_size(models_dir),
    )


def load_onnx_steps(models_dir: Path, threads: int | None = None, image_model: str | None = None) -> tuple:
    """(text forward, vocabulary, image forward, image size) on ONNX Runtime: what serving and `evaluate` run.
    `image_model`: another image model file to run (relative to `models_dir`: the fuse stage's INT8 one)."""
    image_file = image_model or f"{paths.VGG16}/{paths.ONNX_FILE}"
    _check_files(models_dir, ONNX_FILES)
    if not (models_dir / image_file).is_file():
        raise DataError(f"{models_dir}: {paths.FUSION}/{paths.FUSION_FILE} names the image model {image_file}, which "
                        "is missing; run `dvc repro` or `dvc pull`")
    from .runtime import onnx_forward

    return (
        onnx_forward(models_dir / paths.LSTM / paths.ONNX_FILE, threads),
        Vocabulary.load(models_dir / paths.LSTM / paths.VOCAB_FILE),
        onnx_forward(models_dir / image_file, threads),
        image_size(models_dir),
    )


def image_size(models_dir: Path) -> int:
    return int(read_json(models_dir / paths.VGG16 / paths.META_FILE)["image_size"])


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


def batched(fn, array: np.ndarray, rows: np.ndarray, batch: int = 128) -> np.ndarray:
    """fn over array[rows] in batches, so a memory-mapped array is never loaded whole."""
    return np.concatenate([fn(np.asarray(array[rows[i : i + batch]])) for i in range(0, len(rows), batch)])


class Predictor:
    """`text_step` and `image_step` are the two models' forward passes (numpy batch in, probabilities out):
    ONNX Runtime sessions when loaded with `load` (served), compiled Keras models with `load_keras`."""

    def __init__(self, text_step: Forward, vocab: Vocabulary, image_step: Forward, image_size: int,
                 fusion: Fusion | None, image_precision: str = FLOAT32):
        self._text_step = text_step
        self.vocab = vocab
        self._image_step = image_step
        self.image_size = image_size
        self.fusion = fusion
        self.image_precision = image_precision  # of the image model that runs: "float32" or "int8"

    @classmethod
    def load(cls, models_dir: str | os.PathLike, threads: int | None = None,
             image_model: str | os.PathLike | None = None) -> Predictor:
        """The served predictor: both models on ONNX Runtime (`threads` intra-op threads, see runtime.py); the
        image model is the INT8 one when fusion.json names it (the fuse stage's gate accepted it).
        `image_model` overrides that choice (relative to `models_dir`, or absolute): benchmarks compare both."""
        models_dir = Path(models_dir)
        _check_files(models_dir, (*ONNX_FILES, REQUIRED_FILES[-1]))  # all missing ones named at once
        fused = _fusion_file(models_dir)
        image_model = str(image_model or fused.get("image_model") or f"{paths.VGG16}/{paths.ONNX_FILE}")
        precision = FLOAT32 if Path(models_dir, image_model) == models_dir / paths.VGG16 / paths.ONNX_FILE else INT8
        return cls._with_fusion(fused, load_onnx_steps(models_dir, threads, image_model), precision)

    @classmethod
    def load_keras(cls, models_dir: str | os.PathLike) -> Predictor:
        """The same predictor on the Keras models (the float reference; needs TensorFlow)."""
        models_dir = Path(models_dir)
        steps = load_keras_steps(models_dir)
        return cls._with_fusion(_fusion_file(models_dir), steps, FLOAT32)

    @classmethod
    def _with_fusion(cls, fused: dict, steps: tuple, image_precision: str) -> Predictor:
        return cls(*steps, fusion=Fusion.from_dict(fused["fusion"]), image_precision=image_precision)

    # -- preprocessing: the same functions preprocess used on the training data --
    def prepare(self, product: Product, strict_image: bool = True) -> Prepared:
        """Text with no usable word becomes the unknown-text input; a blank image counts as none.

        An unreadable image raises ImageError when `strict_image` (serving answers 4xx); otherwise it
        counts as none too (scoring files on disk: one bad file never stops the run)."""
        cleaned = clean_text(product.designation, product.description)
        image = None
        if product.image is not None:
            try:
                image = load_image(product.image, self.image_size)
            except ImageError:
                if strict_image:
                    raise
            if image is not None and is_blank(image):
                image = None
        return Prepared(self.vocab.encode([cleaned])[0], image, has_text=bool(cleaned))

    # -- forward passes --
    def text_proba(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(self._text_step(tokens), dtype=np.float64)

    def image_proba(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._image_step(images), dtype=np.float64)

    def predict_prepared(self, items: list[Prepared]) -> list[Prediction]:
        if not items:
            return []
        p_text = self.text_proba(np.stack([it.tokens for it in items]))
        with_image = [i for i, it in enumerate(items) if it.image is not None]
        p_image = np.zeros_like(p_text)
        if with_image:
            p_image[with_image] = self.image_proba(np.stack([items[i].image for i in with_image]))
        fused = p_text.copy()
        both = [i for i in with_image if items[i].has_text]
        if both:
            fused[both] = self.fusion.combine(p_text[both], p_image[both])
        image_only = [i for i in with_image if not items[i].has_text]
        fused[image_only] = p_image[image_only]
        has = set(with_image)
        return [Prediction(fused[i], p_text[i], p_image[i] if i in has else None, items[i].has_text)
                for i in range(len(items))]

    def predict(self, products: list[Product], strict_image: bool = True) -> list[Prediction]:
        return self.predict_prepared([self.prepare(p, strict_image) for p in products])


def timed(fn, *args) -> float:
    """Milliseconds one call of fn(*args) takes."""
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000.0
