"""The FastAPI app: `serving.app:app` (settings from the environment), or `create_app(settings)` in tests.

Routes stay thin: the shared preprocessing and predictor live in `product_classifier`, the model call in
`ModelService` behind the micro-batcher, tokens in `security`, limits in slowapi, logs in `middleware`.
"""

import asyncio
import base64
import binascii
import logging
import math
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_fastapi_instrumentator import Instrumentator
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.exceptions import HTTPException as StarletteHTTPException

from product_classifier.atomic import read_json
from product_classifier.errors import DataError
from product_classifier.labels import CLASSES, category
from product_classifier.predictor import Prediction, Predictor, Product

from . import schemas
from .batching import MicroBatcher, Overloaded
from .config import Settings, load_settings
from .metrics import ModelMetrics
from .middleware import BodySizeLimitMiddleware, RequestContextMiddleware, request_id_of, setup_logging
from .security import TokenError, User, authenticate, create_access_token, decode_access_token, load_users
from .service import ModelService

log = logging.getLogger("serving")
METRICS_FILE = "metrics/evaluate/metrics.json"
BEARER = {"WWW-Authenticate": "Bearer"}


def _error(status: int, description: str) -> dict:
    return {status: {"model": schemas.Error, "description": description}}


AUTH_ERRORS = {**_error(401, "Missing, invalid, tampered or expired token."),
               **_error(429, "Rate limit exceeded (RATE_LIMIT_PREDICT per user); see `Retry-After`.")}
INVALID = {422: {"model": schemas.ValidationFailed | schemas.Error,
                 "description": "Invalid input: missing or empty field, text too long, unreadable image."},
           **_error(400, "The body cannot be parsed (malformed JSON or multipart).")}
INPUT_ERRORS = {**INVALID, **_error(413, "Request body over the size limit (MAX_UPLOAD_BYTES)."),
                **_error(503, "Model not loaded yet, or too many predictions waiting; retry later.")}


class ItemRejected(Exception):
    """One product's input is unusable: the status it gets and why."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _json_error(request: Request, status: int, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": request_id_of(request.scope), **extra}, status, headers)


def create_app(settings: Settings | None = None, loader=Predictor.load) -> FastAPI:
    """The app for `settings` (default: from the environment). `loader(models_dir)` builds the Predictor."""
    settings = settings or load_settings()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    model_metrics = ModelMetrics(registry)
    users: dict[str, User] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        setup_logging(settings.serving_logger_path, settings.log_level)
        users.update(load_users(settings))
        if not users:
            log.warning("no users: set USERS_FILE or TEST_USER/TEST_USER_PASSWORD, nobody can get a token")
        try:
            service = ModelService.load(settings.models_dir, settings.dvc_lock_path, model_metrics,
                                        settings.drift_window, loader)
        except DataError as exc:
            log.error("cannot serve: %s", exc)
            raise
        batcher = MicroBatcher(service.run_prediction, settings.batch_max_size, settings.batch_max_wait_ms / 1000,
                               settings.batch_queue_size)
        await batcher.start()
        app.state.service, app.state.batcher = service, batcher
        app.state.evaluate_metrics = _evaluate_metrics(service)
        log.info("ready: model %s, %d user(s)", service.version, len(users))
        try:
            yield
        finally:
            app.state.service = None
            await batcher.stop()

    app = FastAPI(
        title="Rakuten product type classifier",
        version="1.0",
        summary="Predicts a product's `prdtypecode` (27 classes) from its text and image: LSTM + VGG16, fused.",
        description="Get a token from `POST /token` (OAuth2 password flow), then call `POST /predict` with "
                    "`Authorization: Bearer <token>`. Every error is JSON: `{\"detail\", \"request_id\"}`.",
        lifespan=lifespan,
    )
    app.state.service = None
    limiter = Limiter(key_func=get_remote_address, storage_uri=settings.rate_limit_storage_uri)
    app.state.limiter = limiter

    # Prometheus text format, outside the OpenAPI schema (which documents the JSON API).
    Instrumentator(registry=registry, excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.upload_limit)
    app.add_middleware(RequestContextMiddleware)  # outermost: ids and logs every answer, 413s included

    # -- errors: always JSON with the request id, never a traceback --
    @app.exception_handler(StarletteHTTPException)  # FastAPI's and Starlette's own (404, 405, 413 mid-body)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _json_error(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)  # answered by Starlette's outermost middleware, outside ours: add the id here
    async def unexpected(request: Request, exc: Exception):
        request_id = request_id_of(request.scope)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc,
                  extra={"fields": {"request_id": request_id}})
        return _json_error(request, 500, "internal error; quote the request id when reporting it",
                           {"X-Request-ID": request_id})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "header")),
                   "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
        return _json_error(request, 422, f"invalid request: {summary}", errors=errors)

    @app.exception_handler(RateLimitExceeded)
    async def rate_limited(request: Request, exc: RateLimitExceeded):
        retry = 60
        if (current := getattr(request.state, "view_rate_limit", None)) is not None:
            reset, _ = limiter.limiter.get_window_stats(current[0], *current[1])
            retry = max(1, math.ceil(reset - time.time()))
        return _json_error(request, 429, f"rate limit exceeded: {exc.detail}; retry later",
                           {"Retry-After": str(retry)})

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        return _json_error(request, 503, f"service overloaded: {exc}; retry later", {"Retry-After": "1"})

    @app.exception_handler(ItemRejected)
    async def rejected(request: Request, exc: ItemRejected):
        return _json_error(request, exc.status, exc.detail)

    # -- dependencies --
    oauth2 = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)

    def current_user(request: Request, token: Annotated[str | None, Depends(oauth2)]) -> User:
        if not token:
            raise HTTPException(401, "not authenticated: send `Authorization: Bearer <token>` (POST /token)", BEARER)
        try:
            name = decode_access_token(token, settings)
        except TokenError:
            raise HTTPException(401, "invalid or expired token", BEARER) from None
        user = users.get(name)
        if user is None:
            raise HTTPException(401, "invalid or expired token: unknown user", BEARER)
        request.state.user = user.username
        return user

    def service_of(request: Request) -> ModelService:
        service = request.app.state.service
        if service is None:
            raise HTTPException(503, "model not loaded yet", {"Retry-After": "5"})
        return service

    def user_key(request: Request) -> str:
        return f"user:{getattr(request.state, 'user', None) or get_remote_address(request)}"

    predict_limit = limiter.shared_limit(settings.rate_limit_predict, scope="predict", key_func=user_key)
    Authorized = Annotated[User, Depends(current_user)]
    Service = Annotated[ModelService, Depends(service_of)]

    # -- public routes --
    @app.get("/", response_model=schemas.Message, tags=["status"])
    def root():
        return {"message": "Bienvenue sur l'API de classification des produits Rakuten ! Documentation : /docs"}

    @app.get("/status", response_model=schemas.Status, tags=["status"])
    def status():
        return {"status": "L'API fonctionne correctement"}

    @app.get("/health/live", response_model=schemas.Health, tags=["status"], summary="The process answers")
    def live():
        return {"status": "ok"}

    @app.get("/health/ready", response_model=schemas.Health, tags=["status"], summary="The model is loaded",
             responses=_error(503, "The model is not loaded yet."))
    def ready(request: Request):
        service = request.app.state.service
        if service is None:
            return JSONResponse({"status": "loading", "model_version": None}, 503)
        return {"status": "ok", "model_version": service.version}

    @app.post("/token", response_model=schemas.Token, tags=["auth"],
              responses={**_error(401, "Wrong user name or password."), **_error(429, "Too many attempts."), **INVALID})
    @limiter.limit(settings.rate_limit_token)
    def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]):
        """OAuth2 password flow: user name and password as form fields, a JWT back."""
        user = authenticate(users, form.username, form.password)
        if user is None:
            raise HTTPException(401, "wrong user name or password", BEARER)
        request.state.user = user.username
        return {"access_token": create_access_token(user.username, settings), "token_type": "bearer",
                "expires_in": settings.access_token_expire_minutes * 60}

    # -- predictions --
    async def predict_one(service: ModelService, product: Product) -> Prediction:
        try:
            return await app.state.batcher.prepare_and_submit(service.prepare, product)
        except DataError as exc:  # TextError, ImageError
            raise ItemRejected(422, str(exc)) from None

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

    @app.post("/predict", response_model=schemas.PredictResponse, tags=["predict"],
              responses={**AUTH_ERRORS, **INPUT_ERRORS})
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
        prediction = await predict_one(service, Product(designation, description, data))
        return {**body(prediction, productid, imageid), "model_version": service.version,
                "request_id": request_id_of(request.scope)}

    async def predict_item(service: ModelService, item: schemas.BatchItem) -> Prediction:
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
        return await predict_one(service, Product(item.designation, item.description, data))

    @app.post("/predict/batch", response_model=schemas.BatchResponse, tags=["predict"],
              responses={**AUTH_ERRORS, **INPUT_ERRORS})
    @predict_limit
    async def predict_batch(request: Request, user: Authorized, service: Service, batch: schemas.BatchRequest):
        """Classify many products in one call (JSON, images base64-encoded). Each item succeeds or fails on
        its own: a bad item gets an `error`, the others their `prediction`. Counts once against the rate limit."""
        if not batch.items:
            raise ItemRejected(422, "items is empty")
        if len(batch.items) > settings.max_batch_items:
            raise ItemRejected(422, f"at most {settings.max_batch_items} items per batch (MAX_BATCH_ITEMS)")
        outcomes = await asyncio.gather(*(predict_item(service, it) for it in batch.items), return_exceptions=True)
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
                "model_version": service.version, "request_id": request_id_of(request.scope)}

    @app.get("/model", response_model=schemas.ModelInfo, tags=["model"], responses=AUTH_ERRORS)
    def model(request: Request, user: Authorized, service: Service):
        """Which model answers: its version and artifact hashes from `dvc.lock`, its test metrics, its classes."""
        return {"version": service.version, "artifacts": service.identity.hashes,
                "fusion": service.predictor.fusion.method, "image_size": service.predictor.image_size,
                "metrics": request.app.state.evaluate_metrics,
                "classes": [{"prdtypecode": c, "category": category(c)} for c in CLASSES]}

    return app


def _evaluate_metrics(service: ModelService) -> dict | None:
    """The evaluate stage's metrics next to the dvc.lock that versions the model, if present."""
    path = service.identity.lock_path.parent / METRICS_FILE
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def __getattr__(name: str):
    """`serving.app:app` is built on first access, so importing the module reads no settings."""
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
