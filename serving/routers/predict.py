"""`POST /predict` (one product, multipart) and `POST /predict/batch` (many, JSON): authenticated, rate
limited per user, through the micro-batcher to the shared predictor."""

import asyncio
import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from slowapi import Limiter

from product_classifier.errors import DataError
from product_classifier.inference.labels import category
from product_classifier.inference.predictor import Prediction, Prepared, Product

from .. import schemas
from ..challenger import Challenger
from ..config import Settings
from ..dependencies import Authorized, Service, user_key
from ..errors import AUTH_ERRORS, INPUT_ERRORS, ItemRejected
from ..middleware import request_id_of
from ..security import User
from ..service import ModelService


def make_router(settings: Settings, limiter: Limiter) -> APIRouter:
    router = APIRouter(tags=["predict"])
    predict_limit = limiter.shared_limit(settings.rate_limit_predict, scope="predict", key_func=user_key)

    def answering(request: Request, service: ModelService, user: User) -> tuple[Challenger | None, str]:
        """Canary: the challenger when this user is in its share; else the champion (and a shadow, if any)."""
        challenger = request.app.state.challenger
        if challenger is not None and challenger.answers(user.username):
            return challenger, challenger.version
        return None, service.version

    async def predict_one(request: Request, service: ModelService, product: Product,
                          canary: Challenger | None = None) -> Prediction:
        prepared: list[Prepared] = []  # the champion's, for a shadow challenger to reuse its decoded image

        def prepare(item: Product) -> Prepared:
            prepared.append(service.prepare(item))
            return prepared[0]

        try:
            if canary is not None:
                return await run_in_threadpool(canary.predict, product)
            prediction = await request.app.state.batcher.prepare_and_submit(prepare, product)
        except DataError as exc:  # e.g. ImageError (an image that is not one)
            raise ItemRejected(422, str(exc)) from None
        if request.app.state.challenger is not None:  # returns at once
            request.app.state.challenger.shadow(product, prediction, prepared[0], service.predictor.image_size)
        return prediction

    def body(prediction: Prediction, productid: int | None, imageid: int | None) -> dict:
        return {"prdtypecode": prediction.code, "category": category(prediction.code),
                "confidence": prediction.confidence, "top_k": prediction.top_k(settings.top_k),
                "modalities": prediction.modalities, "productid": productid, "imageid": imageid}

    def check_text(designation: str | None, description: str | None) -> None:
        if designation is None or not designation.strip():
            raise ItemRejected(422, "designation is required and must not be empty")
        if len(designation) > settings.max_designation_chars:
            raise ItemRejected(422, f"designation longer than {settings.max_designation_chars} characters")
        if description is not None and len(description) > settings.max_description_chars:
            raise ItemRejected(422, f"description longer than {settings.max_description_chars} characters")

    def check_image(data: bytes) -> bytes:
        if len(data) > settings.max_upload_bytes:
            raise ItemRejected(413, f"image larger than {settings.max_upload_bytes} bytes (MAX_UPLOAD_BYTES)")
        if not data:
            raise ItemRejected(422, "image is empty")
        return data

    @router.post("/predict", response_model=schemas.PredictResponse, responses={**AUTH_ERRORS, **INPUT_ERRORS})
    @predict_limit
    async def predict(
        request: Request,
        user: Authorized,
        service: Service,
        designation: Annotated[str, Form(description="Product title (required).", min_length=1,
                                         max_length=settings.max_designation_chars)],
        description: Annotated[str | None, Form(description="Product description; HTML is cleaned.",
                                                max_length=settings.max_description_chars)] = None,
        productid: Annotated[int | None, Form(description="Catalogue product id, echoed back.")] = None,
        imageid: Annotated[int | None, Form(description="Catalogue image id, echoed back.")] = None,
        image: Annotated[UploadFile | None, File(description="Product image (JPEG, PNG, WebP, ...). "
                                                             "Without one, the text alone decides.")] = None,
    ):
        """Classify one product from its text and, if given, its image."""
        check_text(designation, description)
        data = None
        if image is not None and (image.filename or image.size):  # browsers send an empty part for no file
            data = check_image(await image.read(settings.max_upload_bytes + 1))
        canary, version = answering(request, service, user)
        prediction = await predict_one(request, service, Product(designation, description, data), canary)
        return {**body(prediction, productid, imageid), "model_version": version,
                "request_id": request_id_of(request.scope)}

    async def predict_item(request: Request, service: ModelService, item: schemas.BatchItem,
                           canary: Challenger | None) -> Prediction:
        check_text(item.designation, item.description)
        data = None
        if item.image_base64:
            if len(item.image_base64) > settings.max_upload_bytes * 4 // 3 + 4:
                raise ItemRejected(413, f"image larger than {settings.max_upload_bytes} bytes (MAX_UPLOAD_BYTES)")
            try:
                data = base64.b64decode(item.image_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ItemRejected(422, "image_base64 is not valid base64") from None
            check_image(data)
        return await predict_one(request, service, Product(item.designation, item.description, data), canary)

    @router.post("/predict/batch", response_model=schemas.BatchResponse, responses={**AUTH_ERRORS, **INPUT_ERRORS})
    @predict_limit
    async def predict_batch(request: Request, user: Authorized, service: Service, batch: schemas.BatchRequest):
        """Classify many products in one call (JSON, images base64-encoded). Each item succeeds or fails on
        its own: a bad item gets an `error`, the others their `prediction`. Counts once against the rate limit."""
        if not batch.items:
            raise ItemRejected(422, "items is empty")
        if len(batch.items) > settings.max_batch_items:
            raise ItemRejected(422, f"at most {settings.max_batch_items} items per batch (MAX_BATCH_ITEMS)")
        canary, version = answering(request, service, user)
        outcomes = await asyncio.gather(*(predict_item(request, service, it, canary) for it in batch.items),
                                        return_exceptions=True)
        results = []
        for i, (item, outcome) in enumerate(zip(batch.items, outcomes, strict=True)):
            if isinstance(outcome, ItemRejected):
                results.append({"index": i, "error": {"status": outcome.status, "detail": outcome.detail}})
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append({"index": i, "prediction": body(outcome, item.productid, item.imageid)})
        failed = sum(r.get("error") is not None for r in results)
        return {"results": results, "succeeded": len(results) - failed, "failed": failed,
                "model_version": version, "request_id": request_id_of(request.scope)}

    return router
