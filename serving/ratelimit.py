"""Rate limits: slowapi's Limiter over the `limits` storage (memory, or Redis shared by the replicas), whose
outages degrade and never fail, and the per-account limit on failed `/token` attempts.

Redis is asked with short socket timeouts (RATE_LIMIT_STORAGE_TIMEOUT_SECONDS). When it fails, slowapi's
in-memory fallback counts in this replica's memory (each replica then allows the full limit on its own)
and asks Redis again after 1, 2, 4, ... 32 s, returning to it once it answers; each change is logged and
`rate_limit_storage_fallback` (metrics.py) says which storage counts now.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextlib import contextmanager
from urllib.parse import urlsplit

from limits import RateLimitItem, parse
from limits.strategies import RateLimiter as Strategy
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from slowapi.wrappers import Limit
from starlette.requests import Request

from .config import Settings

log = logging.getLogger("serving")
ACCOUNT_SCOPE = "token-account"


class RateLimiter(Limiter):
    """Per client address by default; `on_memory` is True while the storage is away and memory counts."""

    def __init__(self, settings: Settings):
        uri = settings.rate_limit_storage_uri
        timeout = settings.rate_limit_storage_timeout_seconds
        options = {} if uri.startswith("memory://") else {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        super().__init__(key_func=get_remote_address, storage_uri=uri, storage_options=options,
                         in_memory_fallback_enabled=True)
        parts = urlsplit(uri)  # never the password of redis://:password@host
        self.where = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"

    @property
    def on_memory(self) -> bool:
        return self._storage_dead  # slowapi's own flag: set on a storage error, cleared when a check succeeds

    @contextmanager
    def _watched(self):
        before = self.on_memory
        try:
            yield
        finally:
            if self.on_memory and not before:
                log.warning("rate limit storage %s unreachable: counting in this replica's memory until it answers",
                            self.where)
            elif before and not self.on_memory:
                log.info("rate limit storage %s answers again: limits are shared again", self.where)

    def _check_request_limit(self, request, endpoint_func, in_middleware=True) -> None:
        with self._watched():
            super()._check_request_limit(request, endpoint_func, in_middleware)

    def call(self, use: Callable[[Strategy], object]):
        """`use(strategy)` on the storage that counts now; a storage error moves to memory, as for route limits."""
        with self._watched():
            try:
                return use(self.limiter)
            except Exception:
                if self.on_memory:
                    raise
                self._storage_dead = True
                return use(self.limiter)


class AccountLimit:
    """At most `limit` failed `/token` attempts per user name, known or not, whatever the client address."""

    def __init__(self, limiter: RateLimiter, limit: str):
        self.limiter, self.item = limiter, parse(limit)
        self.wrapper = Limit(self.item, get_remote_address, ACCOUNT_SCOPE, False, None,
                             f"{limit} failed attempts per user name", None, 1, False)

    def key(self, username: str) -> tuple[str, str]:
        # hashed: a bounded key, whatever the client sends as a user name
        return f"account:{hashlib.sha256(username.encode()).hexdigest()[:32]}", ACCOUNT_SCOPE

    def attempt(self, request: Request, username: str) -> None:
        """Counts an attempt for `username` before its password is checked, in one atomic step (a test, then a
        count after bcrypt, let parallel guesses all pass the test); raises the 429 (RateLimitExceeded,
        answered with Retry-After) once `username` has no attempt left."""
        key = self.key(username)
        if not self.limiter.call(lambda strategy: strategy.hit(self.item, *key)):
            request.state.view_rate_limit = (self.item, list(key))
            raise RateLimitExceeded(self.wrapper)

    def succeeded(self, username: str) -> None:
        """The right password: the account's window starts again (successful logins do not use it up)."""
        key = self.key(username)
        self.limiter.call(lambda strategy: strategy.clear(self.item, *key))


def window_reset(limiter: RateLimiter, item: RateLimitItem, key: list[str]) -> float:
    """When the window of `item` for `key` resets (epoch seconds), on the storage that counts now."""
    reset, _ = limiter.call(lambda strategy: strategy.get_window_stats(item, *key))
    return reset
