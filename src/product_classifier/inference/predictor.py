"""The fused predictor: raw product in, class out. Loaded by `evaluate`, batch scoring and serving alike."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from product_classifier.errors import ImageError
from product_classifier.inference import bundle
from product_classifier.inference.fusion import Fusion
from product_classifier.inference.images import is_blank, load_image
from product_classifier.inference.labels import CLASSES, category
from product_classifier.inference.runtime import Forward
from product_classifier.inference.text import Vocabulary, clean_text


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


@dataclass(frozen=True)
class Models:
    """The two models' forward passes (numpy batch in, probabilities out) and what their inputs need."""

    text: Forward
    vocab: Vocabulary
    image: Forward
    image_size: int


def load_onnx(models_dir: Path, threads: int | None = None, image_model: str | None = None) -> Models:
    """Both models on ONNX Runtime (`threads` intra-op threads, see runtime.py): what serving and `evaluate` run.
    `image_model`: another image model file (relative to `models_dir`: the fuse stage's INT8 one)."""
    image_file = image_model or bundle.IMAGE_MODEL
    bundle.check_files(models_dir, (bundle.TEXT_MODEL, bundle.VOCAB, image_file, bundle.IMAGE_META))
    from product_classifier.inference.runtime import onnx_forward

    return Models(onnx_forward(models_dir / bundle.TEXT_MODEL, threads), Vocabulary.load(models_dir / bundle.VOCAB),
                  onnx_forward(models_dir / image_file, threads), bundle.image_size(models_dir))


def map_rows(fn, array: np.ndarray, rows: np.ndarray, batch: int = 128) -> np.ndarray:
    """fn over array[rows], `batch` rows at a time, so a memory-mapped array is never loaded whole."""
    return np.concatenate([fn(np.asarray(array[rows[i : i + batch]])) for i in range(0, len(rows), batch)])


class Predictor:
    """The models (`Models`: ONNX Runtime sessions when loaded with `load`, as served; compiled Keras models with
    the pipeline's `keras_reference.load_keras`), the fusion that combines them, and the bundle they come from
    (None for the fuse stage's own predictor, before the bundle exists)."""

    def __init__(self, models: Models, fusion: Fusion | None, image_precision: str = bundle.FLOAT32,
                 served: bundle.Bundle | None = None):
        self._text_step = models.text
        self.vocab = models.vocab
        self._image_step = models.image
        self.image_size = models.image_size
        self.fusion = fusion
        self.image_precision = image_precision  # of the image model that runs: "float32" or "int8"
        self.bundle = served

    @property
    def drift_reference(self) -> dict | None:
        return self.bundle.drift_reference if self.bundle else None

    @classmethod
    def load(cls, models_dir: str | os.PathLike, threads: int | None = None,
             image_model: str | os.PathLike | None = None, verify: bool = True) -> Predictor:
        """The served predictor from models/bundle.json (every served file hashed once when `verify`): both models
        on ONNX Runtime (`threads` intra-op threads, see runtime.py); the image model is the INT8 one when
        fusion.json names it (the fuse stage's gate accepted it). `image_model` overrides that choice (relative to
        `models_dir`, or absolute): benchmarks compare both."""
        return cls.from_bundle(bundle.load(models_dir, verify), threads, image_model)

    @classmethod
    def from_bundle(cls, served: bundle.Bundle, threads: int | None = None,
                    image_model: str | os.PathLike | None = None) -> Predictor:
        image_model = str(image_model or served.image_model)
        return cls(load_onnx(served.models_dir, threads, image_model), served.fusion,
                   bundle.precision(served.models_dir, image_model), served)

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
