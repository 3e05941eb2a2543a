"""Passwords (passlib bcrypt), users (USERS_FILE + the TEST_USER bootstrap user) and JWT access tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jose import JWTError, jwt
from passlib.context import CryptContext

from product_classifier.atomic import read_json, write_json

from .config import Settings

pwd_context = CryptContext(schemes=["bcrypt"], deprecated="auto")


class TokenError(Exception):
    """A bearer token that is malformed, tampered with, expired or unsigned."""


@dataclass(frozen=True)
class User:
    username: str
    full_name: str
    hashed_password: str


def hash_password(password: str) -> str:
    return pwd_context.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    try:
        return pwd_context.verify(password, hashed)
    except (ValueError, TypeError):
        return False


def read_users_file(path: Path) -> dict[str, User]:
    """`{"alice": {"full_name": ..., "hashed_password": ...}, ...}`; a missing file is no users."""
    if not path.exists():
        return {}
    raw = read_json(path)
    return {name: User(name, entry.get("full_name", name), entry["hashed_password"]) for name, entry in raw.items()}


def write_users_file(path: Path, users: dict[str, User]) -> None:
    """Atomic write, readable by its owner only (it holds password hashes)."""
    data = {u.username: {"full_name": u.full_name, "hashed_password": u.hashed_password} for u in users.values()}
    write_json(path, data, mode=0o600)


def load_users(settings: Settings) -> dict[str, User]:
    users = read_users_file(settings.users_file) if settings.users_file else {}
    if settings.test_user and settings.test_user_password:
        users[settings.test_user] = User(settings.test_user, settings.test_user_fullname,
                                         hash_password(settings.test_user_password.get_secret_value()))
    return users


# Compared against when the user does not exist, so that a wrong name and a wrong password take the same time.
_DUMMY_HASH = pwd_context.hash("not-a-real-password")


def authenticate(users: dict[str, User], username: str, password: str) -> User | None:
    user = users.get(username)
    ok = verify_password(password, user.hashed_password if user else _DUMMY_HASH)
    return user if ok and user else None


def create_access_token(subject: str, settings: Settings, now: datetime | None = None,
                        expires: timedelta | None = None) -> str:
    now = now or datetime.now(UTC)
    expires = expires if expires is not None else timedelta(minutes=settings.access_token_expire_minutes)
    claims = {"sub": subject, "iat": now, "exp": now + expires}
    return jwt.encode(claims, settings.signing_key, algorithm=settings.algorithm)


def decode_access_token(token: str, settings: Settings) -> str:
    """The token's subject (user name). Only the configured algorithm is accepted, so `alg: none` is refused."""
    try:
        claims = jwt.decode(token, settings.signing_key, algorithms=[settings.algorithm],
                            options={"require_exp": True, "require_sub": True})
    except JWTError as exc:
        raise TokenError(str(exc)) from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenError("token has no subject")
    return subject
