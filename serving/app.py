"""The FastAPI app: `serving.app:app` (settings from the environment), or `create_app(settings)` in tests.

Routes stay thin and grouped by concern in `serving/routers/` (health and meta, auth, predictions,
model info); errors are answered in `errors`, dependencies injected from `dependencies`. The shared
preprocessing and predictor live in `product_classifier`, the model call in `ModelService` behind the
micro-batcher, tokens in `security`, limits in slowapi, logs in `middleware`.
"""

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_fastapi_instrumentator import Instrumentator

from product_classifier.errors import DataError
from product_classifier.inference.predictor import Predictor

from .artifacts import ModelIdentity
from .challenger import Challenger
from .config import Settings, load_settings
from .dependencies import bearer_user, needs_token
from .errors import add_error_handlers
from .limits import ConcurrencyLimitMiddleware
from .metrics import ModelMetrics, storage_fallback
from .microbatch import MicroBatcher
from .middleware import AuthMiddleware, BodySizeLimitMiddleware, RequestContextMiddleware, setup_logging
from .ratelimit import RateLimiter
from .routers import auth, health, model, predict
from .security import User, load_users
from .service import ModelService

log = logging.getLogger("serving")


def create_app(settings: Settings | None = None, loader=Predictor.load, identity: ModelIdentity | None = None) -> FastAPI:
    """The app for `settings` (default: from the environment). `loader(models_dir)` builds the Predictor;
    `identity`: the champion's models already checked against dvc.lock (by `python -m serving`)."""
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
        decodes = threading.BoundedSemaphore(settings.max_concurrent_decodes)  # champion and challenger together
        try:
            service = ModelService.load(settings.models_dir, settings.dvc_lock_path, model_metrics,
                                        settings, loader, decodes=decodes, identity=identity)
        except DataError as exc:
            log.error("cannot serve: %s", exc)
            raise
        challenger = None
        if settings.challenger_models_dir is not None:
            try:
                challenger = Challenger(ModelService.load(settings.challenger_models_dir, settings.challenger_dvc_lock_path,
                                                          model_metrics, None, loader, role="challenger",
                                                          decodes=decodes),
                                        settings.challenger_mode, settings.challenger_share,
                                        settings.challenger_queue_size)
            except DataError as exc:
                log.error("cannot load the challenger: %s", exc)
                raise
            log.info("challenger %s in %s mode", challenger.version, settings.challenger_mode)
        app.state.challenger = challenger
        batcher = MicroBatcher(service.run_prediction, settings.batch_max_size, settings.batch_max_wait_ms / 1000,
                               settings.batch_queue_size)
        await batcher.start()
        app.state.service, app.state.batcher = service, batcher
        app.state.evaluate_metrics = model.evaluate_metrics(service)
        log.info("ready: model %s, %d user(s)", service.version, len(users))
        try:
            yield
        finally:
            app.state.service = None
            await batcher.stop()
            if challenger is not None:
                challenger.close()

    app = FastAPI(
        title="Rakuten product type classifier",
        version="1.0",
        summary="Predicts a product's `prdtypecode` (27 classes) from its text and image: LSTM + VGG16, fused.",
        description="Get a token from `POST /token` (OAuth2 password flow), then call `POST /predict` with "
                    "`Authorization: Bearer <token>`. Every error is JSON: `{\"detail\", \"request_id\"}`.",
        lifespan=lifespan,
    )
    app.state.service, app.state.settings, app.state.users = None, settings, users
    app.state.challenger = None
    limiter = RateLimiter(settings)
    app.state.limiter = limiter
    storage_fallback(registry, lambda: limiter.on_memory)

    app.add_middleware(BodySizeLimitMiddleware, limit=settings.upload_limit)
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings.max_concurrent_requests)  # 503 beyond, health uncounted
    app.add_middleware(AuthMiddleware, routes=needs_token, authenticate=bearer_user)  # 401 before any body or slot
    # Prometheus text format, outside the OpenAPI schema (which documents the JSON API); outside the limits
    # above, so that their 401s, 413s and 503s count in http_requests_total (the error-rate alert sees them).
    Instrumentator(registry=registry, excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)
    app.add_middleware(RequestContextMiddleware)  # outermost: ids and logs every answer, 413s included

    add_error_handlers(app, limiter)
    app.include_router(health.router)
    app.include_router(auth.make_router(settings, limiter))
    app.include_router(predict.make_router(settings, limiter))
    app.include_router(model.router)
    return app


def __getattr__(name: str):
    """`serving.app:app` is built on first access, so importing the module reads no settings."""
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
