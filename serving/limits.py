"""A global bound on the requests one process works on at once: beyond it, a burst gets 503s, not memory.

`ConcurrencyLimitMiddleware` (pure ASGI) counts the requests in progress, from their first byte to their
last (a slow upload holds its slot while it trickles in); request MAX_CONCURRENT_REQUESTS + 1 is answered
at once with 503, JSON `{"detail", "request_id"}` and `Retry-After`, before its body is read. Liveness,
readiness and /token (a 4 KiB form) are never counted, so probes and logins stay answered under load. Image decoding has its own, smaller
bound (MAX_CONCURRENT_DECODES, in `ModelService.prepare`).
"""

from __future__ import annotations

from .middleware import answer

# Probes stay answered under load; /token's body is at most TOKEN_BODY_BYTES and it is reached without a
# token, so slow logins must not hold the slots predictions need (the per-address limit bounds its callers).
UNCOUNTED = frozenset({"/health/live", "/health/ready", "/token"})
RETRY_AFTER_SECONDS = 1


class ConcurrencyLimitMiddleware:
    def __init__(self, app, limit: int, uncounted: frozenset[str] = UNCOUNTED):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.app, self.limit, self.uncounted = app, limit, uncounted
        self.active = 0  # one event loop: no lock needed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.uncounted:
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            return await _overloaded(scope, receive, send, self.limit)
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def _overloaded(scope, receive, send, limit: int) -> None:
    await answer(scope, receive, send, 503, f"service overloaded: more than {limit} requests in progress "
                 "(MAX_CONCURRENT_REQUESTS); retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)})
