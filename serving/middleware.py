"""Pure ASGI middlewares: request id + access log, the token check before any body, and the body size limit.

Access log lines are JSON: request id, method, path (never the query string), status, duration, client.
Headers and bodies are never logged, so neither tokens nor passwords can reach the logs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from logging.handlers import RotatingFileHandler
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.routing import get_route_path

ACCESS_LOG = "serving.access"
REQUEST_ID_HEADER = "x-request-id"
# A client's id is kept when it is short and plain; anything else is replaced (log injection).
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(path: Path, level: str = "INFO", max_bytes: int = 10_000_000, backups: int = 5) -> None:
    """JSON lines to stdout and to a rotating file at `path` (SERVING_LOGGER_PATH), for the serving loggers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = JsonFormatter()
    handlers = [logging.StreamHandler(sys.stdout), RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)]
    for handler in handlers:
        handler.setFormatter(formatter)
    for name in ("serving", ACCESS_LOG):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        for old in list(logger.handlers):
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = False


def request_id_of(scope) -> str:
    return scope.get("state", {}).get("request_id", "")


class RequestContextMiddleware:
    """Gives each HTTP request an id (the client's `X-Request-ID` if valid), returns it, and logs the request."""

    def __init__(self, app):
        self.app = app
        self.log = logging.getLogger(ACCESS_LOG)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = sent if _VALID_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER.encode(), request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client")
            fields = {"request_id": request_id, "method": scope["method"], "path": scope["path"], "status": status,
                      "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                      "client": client[0] if client else None,
                      "user": scope["state"].get("user")}
            self.log.info("%s %s %s", scope["method"], scope["path"], status, extra={"fields": fields})


async def answer(scope, receive, send, status: int, detail: str, headers: dict | None = None) -> None:
    """The API's error JSON, `{"detail", "request_id"}`, sent from a middleware (no request body read)."""
    await JSONResponse({"detail": detail, "request_id": request_id_of(scope)}, status, headers)(scope, receive, send)


class AuthMiddleware:
    """Refuses a request to a route that needs a token, without a valid one, before any of its body is
    received (a tokenless client cannot make the server read or parse megabytes).

    `routes(app)` lists the (path pattern, methods) that need a token; `authenticate(connection)` raises the
    HTTPException (401) the route's own dependency would, from the headers alone."""

    def __init__(self, app, routes, authenticate):
        self.app = app
        self.routes, self.authenticate = routes, authenticate
        self.guarded = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            if self.guarded is None:  # the app's routes are all known by its first request
                self.guarded = self.routes(scope["app"])
            path = get_route_path(scope)
            if any(scope["method"] in methods and pattern.match(path) for pattern, methods in self.guarded):
                try:
                    self.authenticate(HTTPConnection(scope))
                except HTTPException as exc:
                    return await answer(scope, receive, send, exc.status_code, str(exc.detail), exc.headers)
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from `receive` mid-body; an HTTPException so that FastAPI's body parsing passes it through."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes (see MAX_UPLOAD_BYTES, MAX_BATCH_BYTES)")


class BodySizeLimitMiddleware:
    """Refuses request bodies over `limit(path)` bytes with 413, from Content-Length or while streaming."""

    def __init__(self, app, limit):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await answer(scope, receive, send, 413, BodyTooLarge(limit).detail)
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if not started:
                await answer(scope, receive, send, 413, exc.detail)
