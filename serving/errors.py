"""Every error the API answers is JSON with the request id, never a traceback: the handlers, and the
error responses the routes document in the OpenAPI schema."""

import logging
import math
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from slowapi.errors import RateLimitExceeded
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import schemas
from .microbatch import Overloaded
from .middleware import request_id_of
from .ratelimit import RateLimiter, window_reset

log = logging.getLogger("serving")
BEARER = {"WWW-Authenticate": "Bearer"}


def documented(status: int, description: str) -> dict:
    return {status: {"model": schemas.Error, "description": description}}


AUTH_ERRORS = {**documented(401, "Missing, invalid, tampered or expired token."),
               **documented(429, "Rate limit exceeded (RATE_LIMIT_PREDICT per user); see `Retry-After`.")}
INVALID = {422: {"model": schemas.ValidationFailed | schemas.Error,
                 "description": "Invalid input: missing or empty field, text too long, unreadable image."},
           **documented(400, "The body cannot be parsed (malformed JSON or multipart).")}
INPUT_ERRORS = {**INVALID, **documented(413, "Request body over the size limit (MAX_UPLOAD_BYTES)."),
                **documented(503, "Model not loaded yet, or too many predictions waiting; retry later.")}


class ItemRejected(Exception):
    """One product's input is unusable: the status it gets and why."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def json_error(request: Request, status: int, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": request_id_of(request.scope), **extra}, status, headers)


def add_error_handlers(app: FastAPI, limiter: RateLimiter) -> None:
    @app.exception_handler(StarletteHTTPException)  # FastAPI's and Starlette's own (404, 405, 413 mid-body)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return json_error(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)  # answered by Starlette's outermost middleware, outside ours: add the id here
    async def unexpected(request: Request, exc: Exception):
        request_id = request_id_of(request.scope)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc,
                  extra={"fields": {"request_id": request_id}})
        return json_error(request, 500, "internal error; quote the request id when reporting it",
                          {"X-Request-ID": request_id})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "header")),
                   "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
        return json_error(request, 422, f"invalid request: {summary}", errors=errors)

    @app.exception_handler(RateLimitExceeded)
    async def rate_limited(request: Request, exc: RateLimitExceeded):
        retry = 60
        if (current := getattr(request.state, "view_rate_limit", None)) is not None:
            retry = max(1, math.ceil(window_reset(limiter, *current) - time.time()))
        return json_error(request, 429, f"rate limit exceeded: {exc.detail}; retry later", {"Retry-After": str(retry)})

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        return json_error(request, 503, f"service overloaded: {exc}; retry later", {"Retry-After": "1"})

    @app.exception_handler(ItemRejected)
    async def rejected(request: Request, exc: ItemRejected):
        return json_error(request, exc.status, exc.detail)
