"""Typed view of params.yaml. Every stage reads its parameters through `load_params`.

The values, and what each means, live in params.yaml alone: these models type and bound them and have no
defaults of their own (a key missing from params.yaml is an error naming it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from product_classifier.errors import ParamError

BACKENDS = ("tensorflow", "jax", "torch")  # Keras 3's (train.backend; backend.py selects it)
Backend = Literal[BACKENDS]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Strict):
    source: Literal["sample", "huggingface"]
    seed: int
    sample_size: int = Field(ge=200, description="training rows of the embedded sample")
    url: str
    files: tuple[str, ...]
    # The image archive: `images_low.zip` (what the original project downloads: image_train/ at its
    # root, plus __MACOSX/ junk) or `images.zip` (the same folders under images/).
    image_archive: str = Field(pattern=r"^[^/\\]+\.zip$")
    # Optional "file name -> sha256" pins checked after download.
    sha256: dict[str, str]

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v if v.endswith("/") else v + "/"


class PreprocessParams(_Strict):
    seed: int
    image_size: int = Field(ge=32, le=512)
    max_words: int = Field(ge=100)
    max_len: int = Field(ge=4, le=1024)
    val_size: float = Field(gt=0, lt=0.5)
    test_size: float = Field(gt=0, lt=0.5)
    workers: int = Field(ge=0, description="image decoding processes; 0 = one per core")


class LstmParams(_Strict):
    embedding_dim: int = Field(ge=4)
    units: int = Field(ge=4)
    dropout: float = Field(ge=0, lt=1)
    learning_rate: float = Field(gt=0)


class Vgg16Params(_Strict):
    weights: str
    dense_units: int = Field(ge=4)
    dropout: float = Field(ge=0, lt=1)
    learning_rate: float = Field(gt=0)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if v in ("none", "imagenet") or v.endswith((".h5", ".weights.h5", ".keras")):
            return v
        raise ValueError("must be none, imagenet or a path to a .h5/.keras weights file")


class TrainParams(_Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    patience: int = Field(ge=1)
    seed: int
    backend: Backend
    lstm: LstmParams
    vgg16: Vgg16Params


class FuseParams(_Strict):
    method: Literal["weighted", "stacking"]
    low_confidence: float = Field(gt=0, lt=1)


class QuantizeParams(_Strict):
    """Optional INT8 image model, served only if it passes the gate (fuse stage, validation split)."""

    int8: bool
    calibration_size: int = Field(ge=1, description="training images that calibrate the activation ranges")
    max_f1_drop: float = Field(ge=0, le=1, description="largest drop of fused weighted F1 (validation) "
                               "the INT8 image model may cause and still be served")
    min_agreement: float = Field(ge=0, le=1, description="smallest share of validation products whose fused "
                                 "class is the same with the INT8 and the float image model")


class EvaluateParams(_Strict):
    latency_samples: int = Field(ge=5)


class PredictParams(_Strict):
    chunk_size: int = Field(ge=1, description="local engine: products scored per chunk by the predict stage")
    # local: this process (scoring/score.py); ray: Ray Data actors (scoring/ray_data.py) on the cluster at RAY_ADDRESS, else on
    # a local Ray; the same rows either way. Ray needs the `scale` extra.
    engine: Literal["local", "ray"]
    actors: int = Field(ge=1, description="ray engine: scoring actors, one CPU each; each loads the models once")
    batch_size: int = Field(ge=1, description="ray engine: products per batch an actor scores at once")


class PromoteParams(_Strict):
    tolerance: float = Field(ge=0, le=1, description="largest drop of fused weighted F1 (test split) a "
                             "retrained model may show against the champion and still be promoted")


class Params(_Strict):
    data: DataParams
    preprocess: PreprocessParams
    train: TrainParams
    fuse: FuseParams
    quantize: QuantizeParams
    evaluate: EvaluateParams
    predict: PredictParams
    promote: PromoteParams


def parse_params(raw: dict) -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ParamError(f"params.yaml: {where}: {err['msg']} (got {err.get('input')!r})") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path} not found: run stages from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamError(f"{path} is not valid YAML: {exc}".splitlines()[0]) from None
    return parse_params(raw)
