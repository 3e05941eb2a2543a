"""Request and response bodies: the API's contract, with every field described for the OpenAPI docs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Message(BaseModel):
    message: str = Field(description="Welcome message (contains `Bienvenue`).")


class Status(BaseModel):
    status: str = Field(description="`L'API fonctionne correctement` while the process answers.")


class Health(BaseModel):
    status: str = Field(description="`ok` when live / ready, `loading` while the model is not loaded yet.")
    model_version: str | None = Field(None, description="Version of the loaded model, once ready.")


class Token(BaseModel):
    access_token: str = Field(description="JWT to send as `Authorization: Bearer <token>`.")
    token_type: str = Field("bearer", description="Always `bearer`.")
    expires_in: int = Field(description="Seconds until the token expires.")


class Error(BaseModel):
    detail: str = Field(description="What went wrong, in one sentence.")
    request_id: str | None = Field(None, description="Id of the request (also in the `X-Request-ID` header).")


class FieldError(BaseModel):
    field: str = Field(description="The field at fault (`items.2.designation`), empty for the whole body.")
    message: str = Field(description="What is wrong with it.")


class ValidationFailed(Error):
    errors: list[FieldError] = Field(description="Each problem found in the request.")


class ClassScore(BaseModel):
    prdtypecode: int = Field(description="Product type code.")
    category: str = Field(description="Approximate category name of the code (community guess).")
    probability: float = Field(ge=0, le=1, description="Fused probability of the code.")


class PredictionBody(BaseModel):
    prdtypecode: int = Field(description="Predicted product type code (one of the 27 classes).")
    category: str = Field(description="Approximate category name of `prdtypecode`.")
    confidence: float = Field(ge=0, le=1, description="Probability of the predicted code.")
    top_k: list[ClassScore] = Field(description="The most probable codes, most probable first.")
    modalities: list[str] = Field(description="Inputs the prediction used: `text` when the text has a usable word, "
                                               "`image` when an image was given and usable (a missing or blank image "
                                               "means text alone; text with no usable word, image alone; neither: "
                                               "empty, the model's answer to unknown text).")
    productid: int | None = Field(None, description="Echo of the product id sent, if any.")
    imageid: int | None = Field(None, description="Echo of the image id sent, if any.")


class PredictResponse(PredictionBody):
    model_version: str = Field(description="Version of the model that answered (models/bundle.json's).")
    request_id: str = Field(description="Id of the request (also in the `X-Request-ID` header).")


class BatchItem(BaseModel):
    """One product of a batch. Fields are checked per item: a bad item fails alone."""

    designation: str | None = Field(None, description="Product title (required per item).")
    description: str | None = Field(None, description="Product description, may contain HTML.")
    productid: int | None = Field(None, description="Catalogue product id, echoed back.")
    imageid: int | None = Field(None, description="Catalogue image id, echoed back.")
    image_base64: str | None = Field(None, description="The product image file (JPEG, PNG, WebP, ...), base64-encoded.")


class BatchRequest(BaseModel):
    items: list[BatchItem] = Field(description="Products to classify; at most MAX_BATCH_ITEMS.")


class ItemError(BaseModel):
    status: int = Field(description="HTTP status this item would have had alone (4xx).")
    detail: str = Field(description="Why the item could not be classified.")


class BatchResult(BaseModel):
    index: int = Field(description="Position of the item in the request.")
    prediction: PredictionBody | None = Field(None, description="The prediction, when the item was valid.")
    error: ItemError | None = Field(None, description="Why the item failed, when it did.")


class BatchResponse(BaseModel):
    results: list[BatchResult] = Field(description="One result per item, in request order.")
    succeeded: int = Field(description="Items classified.")
    failed: int = Field(description="Items rejected (see their `error`).")
    model_version: str = Field(description="Version of the model that answered.")
    request_id: str = Field(description="Id of the request.")


class ModelClass(BaseModel):
    prdtypecode: int = Field(description="Product type code.")
    category: str = Field(description="Approximate category name.")


class ChallengerInfo(BaseModel):
    version: str = Field(description="The challenger's model version (its models/bundle.json's).")
    mode: str = Field(description="`shadow` (predicts beside the champion, never answers) or `canary`.")
    share: float | None = Field(None, description="Canary: the share of users it answers (sticky per user).")
    artifacts: dict[str, str] = Field(description="sha256 of each file it serves, by path under its models folder.")


class ModelInfo(BaseModel):
    version: str = Field(description="Model version: a hash of the served files' sha256 (models/bundle.json, whose md5 `dvc.lock` records).")
    artifacts: dict[str, str] = Field(description="sha256 of each served file, by path under models/ (`lstm/model.onnx`, ...).")
    fusion: str = Field(description="How the two models' probabilities are combined (`weighted` or `stacking`).")
    image_size: int = Field(description="Side in pixels images are resized to.")
    image_precision: Literal["float32", "int8"] = Field("float32", description="Precision of the image model that runs: `float32`, or "
                                 "`int8` when the fuse stage's INT8 gate accepted the quantized one (`quantize.int8`).")
    metrics: dict | None = Field(None, description="The `evaluate` stage's test metrics for this model "
                                                   "(`fused`, `lstm`, `vgg16`), when available.")
    classes: list[ModelClass] = Field(description="The 27 classes the model predicts.")
    role: str = Field("champion", description="This model's role: `champion` (it answers).")
    challenger: ChallengerInfo | None = Field(None, description="The challenger beside it (CHALLENGER_MODELS_DIR), "
                                                                "if one is loaded.")
