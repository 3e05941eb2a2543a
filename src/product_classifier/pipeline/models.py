"""Model builders: small functions that each return a `keras.Model`."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from product_classifier import paths
from product_classifier.errors import ParamError
from product_classifier.inference.labels import NUM_CLASSES
from product_classifier.pipeline.params import LstmParams, Vgg16Params


def resolve_vgg16_weights(weights: str) -> str | None:
    """What to pass as `keras.applications.VGG16(weights=...)`, failing fast and clearly offline."""
    if weights == "none":
        return None
    if weights == "imagenet":
        cached = paths.imagenet_weights()
        if cached.exists():
            return str(cached)
        try:
            return keras.utils.get_file(paths.IMAGENET_NOTOP, paths.IMAGENET_URL, cache_subdir="models",
                                        file_hash=paths.IMAGENET_MD5)
        except Exception as exc:  # any network failure: say what to do instead
            raise ParamError(
                f"train.vgg16.weights=imagenet: cannot download {paths.IMAGENET_NOTOP} ({type(exc).__name__}). "
                f"Install it once with `make weights FROM=<path or URL of that file>` (it goes to {cached}), "
                f"or set train.vgg16.weights to its path, or to none"
            ) from None
    path = Path(weights)
    if not path.exists():
        raise ParamError(f"train.vgg16.weights: {path} not found")
    return str(path)


_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="product_classifier")
class CaffePreprocess(keras.layers.Layer):
    """VGG16's own input scaling (RGB->BGR, ImageNet mean removed), inside the model so that
    the saved model takes the same uint8 RGB arrays as the shared image decoder returns."""

    def call(self, x):
        x = keras.ops.cast(x, "float32")
        return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor(np.array(_BGR_MEAN, "float32"))


def build_lstm(vocab_size: int, max_len: int, p: LstmParams) -> keras.Model:
    tokens = keras.Input((max_len,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, p.embedding_dim, mask_zero=True)(tokens)
    x = keras.layers.LSTM(p.units)(x)
    x = keras.layers.Dropout(p.dropout)(x)
    out = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probs")(x)
    return keras.Model(tokens, out, name="lstm")


def build_vgg16_base(image_size: int, weights: str) -> keras.Model:
    """Frozen VGG16 convolutional base: uint8 RGB image -> 512 pooled features."""
    images = keras.Input((image_size, image_size, 3), name="image")
    x = CaffePreprocess(name="caffe_preprocess")(images)
    vgg = keras.applications.VGG16(include_top=False, weights=resolve_vgg16_weights(weights),
                                   input_shape=(image_size, image_size, 3), pooling="avg")
    vgg.trainable = False
    return keras.Model(images, vgg(x), name="vgg16_base")


def build_image_head(features: np.ndarray, p: Vgg16Params) -> keras.Model:
    """Dense head on VGG16 features; the normalisation is fitted on training features."""
    inputs = keras.Input((features.shape[1],), name="features")
    norm = keras.layers.Normalization(name="feature_norm")
    norm.adapt(features)
    x = norm(inputs)
    x = keras.layers.Dense(p.dense_units, activation="relu")(x)
    x = keras.layers.Dropout(p.dropout)(x)
    out = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probs")(x)
    return keras.Model(inputs, out, name="vgg16_head")


def compose(base: keras.Model, head: keras.Model) -> keras.Model:
    """The served image model: raw uint8 image in, class probabilities out."""
    images = keras.Input(base.input_shape[1:], name="image")
    return keras.Model(images, head(base(images)), name="vgg16")
