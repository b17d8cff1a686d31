"""Admission control in the gateway: a token bucket per API key, in front of /v1 and /mcp.

Each key (the sha256 of its Authorization header; callers without one share a bucket per client
address) may make `rate` requests per second on average and `burst` at once. Over that the
request is refused with 429, Retry-After and a message naming the limit, before it costs an
encode or an actor call. Buckets live in each gateway replica, so with N replicas a key's
ceiling is N x rate; the table of buckets is bounded (least recently used keys are forgotten).
Operational routes (/healthz, /readyz, /metrics, /docs, the dashboard's files) are not limited.

A token bucket is a dozen lines; a library (limits, aiolimiter) would add a dependency whose
waiting or windowed semantics we would have to bend into "refuse with Retry-After".
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from errors import RateLimited
from serve.error_map import problem_for
from serve.http_middleware import API_PREFIX, MCP_PATH, problem_response, request_id_of

LIMITED_PREFIXES = (API_PREFIX, MCP_PATH)
MAX_BUCKETS = 10_000


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # most tokens held
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """Buckets by key, least recently used forgotten past MAX_BUCKETS."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait_needed(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        return bucket.take(now)


def _caller_key(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return hashlib.sha256(value).hexdigest()
    client = scope.get("client")
    return f"anonymous:{client[0] if client else '?'}"


class RateLimitMiddleware:
    """429 for a key over its rate (see the module docstring); `rate` <= 0 turns it off."""

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app = app
        self.limiter = RateLimiter(rate, burst) if rate > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limiter is not None and scope["type"] == "http" \
                and scope.get("path", "").startswith(LIMITED_PREFIXES):
            wait = self.limiter.wait_needed(_caller_key(scope))
            if wait > 0:
                refused = RateLimited(
                    f"rate limit: at most {self.limiter.rate:g} requests per second per API key "
                    f"(bursts of {self.limiter.burst}; NMEM_RATE_LIMIT_PER_SECOND); slow down",
                    retry_after=wait)
                await problem_response(problem_for(refused, request_id_of(scope)), scope=scope)(scope, receive, send)
                return
        await self.app(scope, receive, send)
