"""What routes inject with `Depends`: the settings, the current user (Bearer JWT), the loaded model.

Per-app objects (settings, users, the model service) live on `app.state`, set by `create_app` and
its lifespan, so the routers themselves hold no state."""

import re
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from fastapi.security.utils import get_authorization_scheme_param
from slowapi.util import get_remote_address
from starlette.requests import HTTPConnection
from starlette.routing import compile_path

from .config import Settings
from .errors import BEARER
from .security import TokenError, User, decode_access_token
from .service import ModelService

oauth2 = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def bearer_user(connection: HTTPConnection) -> User:
    """The user whose `Authorization: Bearer` token this request carries, else a 401. Reads headers only:
    `AuthMiddleware` calls it before the body is received, the `current_user` dependency after."""
    scheme, token = get_authorization_scheme_param(connection.headers.get("authorization"))
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "not authenticated: send `Authorization: Bearer <token>` (POST /token)", BEARER)
    try:
        name = decode_access_token(token, connection.app.state.settings)
    except TokenError:
        raise HTTPException(401, "invalid or expired token", BEARER) from None
    user = connection.app.state.users.get(name)
    if user is None:
        raise HTTPException(401, "invalid or expired token: unknown user", BEARER)
    return user


def current_user(request: Request, token: Annotated[str | None, Depends(oauth2)]) -> User:
    """`oauth2` documents the scheme in OpenAPI; `bearer_user` decides."""
    user = bearer_user(request)
    request.state.user = user.username
    return user


def needs_token(app: FastAPI) -> list[tuple[re.Pattern, set[str]]]:
    """(path pattern, methods) of the operations that the OpenAPI schema says need the bearer token: those
    that depend on `current_user` (`Authorized`), directly or through another dependency."""
    guarded = []
    for path, operations in app.openapi()["paths"].items():
        if methods := {method.upper() for method, operation in operations.items() if operation.get("security")}:
            guarded.append((compile_path(path)[0], methods))
    return guarded


def service_of(request: Request) -> ModelService:
    service = request.app.state.service
    if service is None:
        raise HTTPException(503, "model not loaded yet", {"Retry-After": "5"})
    return service


def user_key(request: Request) -> str:
    """Rate limits count per authenticated user (per client address before authentication)."""
    return f"user:{getattr(request.state, 'user', None) or get_remote_address(request)}"


Authorized = Annotated[User, Depends(current_user)]
Service = Annotated[ModelService, Depends(service_of)]
