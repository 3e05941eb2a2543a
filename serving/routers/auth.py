"""`POST /token`: the OAuth2 password flow (user name and password in, a JWT out), rate limited."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordRequestForm
from slowapi import Limiter

from .. import schemas
from ..config import Settings
from ..errors import BEARER, INVALID, documented
from ..security import authenticate, create_access_token


def make_router(settings: Settings, limiter: Limiter) -> APIRouter:
    router = APIRouter(tags=["auth"])

    @router.post("/token", response_model=schemas.Token,
                 responses={**documented(401, "Wrong user name or password."), **documented(429, "Too many attempts."),
                            **INVALID})
    @limiter.limit(settings.rate_limit_token)
    def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]):
        """OAuth2 password flow: user name and password as form fields, a JWT back."""
        user = authenticate(request.app.state.users, form.username, form.password)
        if user is None:
            raise HTTPException(401, "wrong user name or password", BEARER)
        request.state.user = user.username
        return {"access_token": create_access_token(user.username, settings), "token_type": "bearer",
                "expires_in": settings.access_token_expire_minutes * 60}

    return router
