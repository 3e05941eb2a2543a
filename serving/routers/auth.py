"""`POST /token`: the OAuth2 password flow (user name and password in, a JWT out), rate limited per client
address and, for failed attempts, per user name."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordRequestForm

from .. import schemas
from ..config import Settings
from ..errors import BEARER, INVALID, documented
from ..ratelimit import AccountLimit, RateLimiter
from ..security import authenticate, create_access_token


def make_router(settings: Settings, limiter: RateLimiter) -> APIRouter:
    router = APIRouter(tags=["auth"])
    account = AccountLimit(limiter, settings.rate_limit_token_account)

    @router.post("/token", response_model=schemas.Token,
                 responses={**documented(401, "Wrong user name or password."),
                            **documented(429, "Too many attempts: RATE_LIMIT_TOKEN per client address, "
                                              "RATE_LIMIT_TOKEN_ACCOUNT failed ones per user name; see `Retry-After`."),
                            **INVALID})
    @limiter.limit(settings.rate_limit_token)
    def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]):
        """OAuth2 password flow: user name and password as form fields, a JWT back."""
        account.attempt(request, form.username)  # counted before the password is even hashed
        user = authenticate(request.app.state.users, form.username, form.password)
        if user is None:
            raise HTTPException(401, "wrong user name or password", BEARER)
        account.succeeded(user.username)
        request.state.user = user.username
        return {"access_token": create_access_token(user.username, settings), "token_type": "bearer",
                "expires_in": settings.access_token_expire_minutes * 60}

    return router
