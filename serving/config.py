"""Every serving setting, typed, from the environment and `.env` (`.env.example` documents each one)."""

from __future__ import annotations

import secrets
import warnings
from functools import cached_property
from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_CHARS = 32
# /token's form (user name, password, OAuth2's optional fields) fits many times over; it is read before any check
TOKEN_BODY_BYTES = 4096
WEAK_SECRETS = frozenset({"secret", "changeme", "change-me", "password", "secret_key", "your-secret-key", "dev"})
# Passwords (TEST_USER_PASSWORD outside development, `make users`): at least this long, and zxcvbn's score at
# least MIN_PASSWORD_SCORE (3: about 10^8 guesses or more; common passwords, words, keyboard walks and
# repeats score 0-2). bcrypt reads the first 72 bytes only, so those are what is scored.
MIN_PASSWORD_CHARS = 12
MIN_PASSWORD_SCORE = 3
BCRYPT_MAX_BYTES = 72


class ConfigError(ValueError):
    """The serving configuration is unusable: the app refuses to start."""


def weak_secret(value: str) -> str | None:
    """Why `value` is too weak to sign tokens with, or None if it is fine."""
    if len(value) < MIN_SECRET_CHARS:
        return f"shorter than {MIN_SECRET_CHARS} characters"
    if value.lower() in WEAK_SECRETS or len(set(value)) < 8:
        return "too easy to guess"
    return None


def weak_password(password: str, username: str | None = None) -> str | None:
    """Why `password` is too weak for an account (a common password, a word, the user's name), or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"shorter than {MIN_PASSWORD_CHARS} characters"
    from zxcvbn import zxcvbn  # its word lists take a moment to load: only where a password is checked

    scored = password.encode()[:BCRYPT_MAX_BYTES].decode(errors="ignore")
    result = zxcvbn(scored, user_inputs=[username] if username else [])
    if result["score"] < MIN_PASSWORD_SCORE:
        hint = result["feedback"]["warning"] or "a common pattern"
        return f"too easy to guess ({hint.rstrip('.').lower()})"
    return None


def load_settings(**overrides) -> Settings:
    """Settings from the environment and `.env`; any problem is one ConfigError naming the variables."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = str(error.get("ctx", {}).get("error") or error["msg"])
            problems.append(f"{name}: {message}" if name else message)
        raise ConfigError("; ".join(problems)) from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    environment: Literal["development", "production"] = "production"
    # Tokens
    secret_key: SecretStr | None = None
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_expire_minutes: int = Field(30, gt=0)
    # Users
    users_file: Path | None = None
    test_user: str | None = None
    test_user_password: SecretStr | None = None
    test_user_fullname: str = "Test User"
    # Rate limits (slowapi / `limits` syntax) and their storage
    rate_limit_predict: str = "10/minute"
    rate_limit_token: str = "20/minute"
    # Failed /token attempts per user name (known or not), across replicas with Redis
    rate_limit_token_account: str = "5/minute"
    rate_limit_storage_uri: str = "memory://"
    # Redis connect and read timeout; past it (or Redis down), limits count per replica in memory until it is back
    rate_limit_storage_timeout_seconds: float = Field(0.5, gt=0, le=30)
    # Input limits
    max_upload_bytes: int = Field(5_000_000, gt=0)
    max_batch_items: int = Field(32, gt=0)
    # Largest /predict/batch body: MAX_BATCH_ITEMS products of about 500 kB each as JSON (a 375 kB JPEG
    # base64-encoded, 3x the largest sample image, plus text); .env.example says where the figure comes from
    max_batch_bytes: int = Field(16_000_000, gt=0)
    max_designation_chars: int = Field(1_000, gt=0)
    max_description_chars: int = Field(20_000, gt=0)
    # Work in progress at once (serving/limits.py): requests beyond it get 503; images decoded at once, each
    # bounded by product_classifier.inference.images.MAX_DECODE_BYTES (128 MiB)
    max_concurrent_requests: int = Field(64, gt=0)
    max_concurrent_decodes: int = Field(2, gt=0)
    # Model
    models_dir: Path = Path("models")
    dvc_lock_path: Path | None = None
    top_k: int = Field(5, ge=1, le=27)
    # Drift statistics (serving/drift.py): predictions of the last DRIFT_WINDOW_SECONDS, at most DRIFT_WINDOW
    drift_window: int = Field(5000, gt=0)
    drift_window_seconds: float = Field(3600, gt=0)
    drift_min_samples: int = Field(100, ge=10)
    # A challenger beside the champion (serving/challenger.py): its models folder (dvc.lock beside it or
    # CHALLENGER_DVC_LOCK_PATH), shadow (predicts on the same requests, off the request path) or canary
    # (CHALLENGER_SHARE of users, sticky per user, answered by it)
    challenger_models_dir: Path | None = None
    challenger_dvc_lock_path: Path | None = None
    challenger_mode: Literal["shadow", "canary"] = "shadow"
    challenger_share: float = Field(0.1, ge=0, le=1)
    challenger_queue_size: int = Field(64, ge=1)
    # Micro-batching of concurrent predictions (BATCH_MAX_SIZE=1 turns it off)
    batch_max_size: int = Field(32, ge=1, le=1024)
    batch_max_wait_ms: float = Field(2.0, ge=0, le=1000)
    batch_queue_size: int = Field(256, ge=1)
    # Server (`python -m serving`, `make serve`, the image)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Logs
    serving_logger_path: Path = Path("logs/serving.log")
    log_level: str = "INFO"

    @field_validator("rate_limit_predict", "rate_limit_token", "rate_limit_token_account")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_many(value)  # ValueError: not `limits` syntax such as 10/minute
        return value

    @model_validator(mode="after")
    def _strong_secret_outside_development(self) -> Settings:
        if self.environment != "development":
            if self.secret_key is None:
                raise ConfigError("SECRET_KEY is required outside development (ENVIRONMENT=development to skip); "
                                  'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"')
            if reason := weak_secret(self.secret_key.get_secret_value()):
                raise ConfigError(f"SECRET_KEY is {reason}; use a random key of at least {MIN_SECRET_CHARS} characters")
            if self.test_user_password is not None and (
                    reason := weak_password(self.test_user_password.get_secret_value(), self.test_user)):
                raise ConfigError(f"TEST_USER_PASSWORD is {reason}; use a random one, e.g. "
                                  'python -c "import secrets; print(secrets.token_urlsafe(16))"')
        return self

    @cached_property
    def signing_key(self) -> str:
        """The key tokens are signed with; in development without SECRET_KEY, a random one per process."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        warnings.warn("no SECRET_KEY: using a random key, tokens will not survive a restart", stacklevel=2)
        return secrets.token_urlsafe(48)

    def upload_limit(self, path: str) -> int:
        """Largest request body accepted on `path`: one image plus form fields, a batch (MAX_BATCH_BYTES), or
        /token's form (TOKEN_BODY_BYTES)."""
        if path.rstrip("/").endswith("/predict/batch"):
            return self.max_batch_bytes
        if path.rstrip("/") == "/token":
            return TOKEN_BODY_BYTES
        return self.max_upload_bytes + self.max_designation_chars * 4 + self.max_description_chars * 4 + 4096
