"""What routes inject with `Depends`: the settings, the current user (Bearer JWT), the loaded model.

Per-app objects (settings, users, the model service) live on `app.state`, set by `create_app` and
its lifespan, so the routers themselves hold no state."""

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from slowapi.util import get_remote_address

from .config import Settings
from .errors import BEARER
from .security import TokenError, User, decode_access_token
from .service import ModelService

oauth2 = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def current_user(request: Request, token: Annotated[str | None, Depends(oauth2)]) -> User:
    if not token:
        raise HTTPException(401, "not authenticated: send `Authorization: Bearer <token>` (POST /token)", BEARER)
    try:
        name = decode_access_token(token, settings_of(request))
    except TokenError:
        raise HTTPException(401, "invalid or expired token", BEARER) from None
    user = request.app.state.users.get(name)
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
    """Rate limits count per authenticated user (per client address before authentication)."""
    return f"user:{getattr(request.state, 'user', None) or get_remote_address(request)}"


Authorized = Annotated[User, Depends(current_user)]
Service = Annotated[ModelService, Depends(service_of)]
