"""Admission control in the gateway, in front of /v1 and /mcp: per API key, a token bucket and
a cap on requests in flight.

Each key (as `Authenticator.caller_of` resolves it, however the header spells it; callers
without a known key share one bucket) may make `rate` requests per second on
average and `burst` at once. Over that the request is refused with 429, Retry-After and a message naming the limit, before it costs an
encode or an actor call. Buckets live in each gateway replica, so with N replicas a key's
ceiling is N x rate; the table of buckets is bounded (least recently used keys are forgotten).
Operational routes (/healthz, /readyz, /metrics, /docs, the dashboard's files) are not limited.

The in-flight cap keeps one key from holding every request slot of a replica (Serve gives it
serve.settings.GATEWAY_REQUEST_SLOTS): a client that opens hundreds of requests and sends their
bodies slowly (each within the body-stall rule) would otherwise stall every other tenant until they end. A
request over the cap is refused at once with 429, so the others' slots stay free.

A token bucket is a dozen lines; a library (limits, aiolimiter) would add a dependency whose
waiting or windowed semantics we would have to bend into "refuse with Retry-After".
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from errors import RateLimited
from serve.auth import Authenticator
from serve.error_map import problem_for
from serve.http_middleware import API_PREFIX, MCP_PATH, app_path, header_of, problem_response, request_id_of

LIMITED_PREFIXES = (API_PREFIX, MCP_PATH)
MAX_BUCKETS = 10_000
# How soon a caller refused for requests in flight may try again: a typical request's length.
IN_FLIGHT_RETRY_AFTER_S = 1.0


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


class AdmissionMiddleware:
    """429 for a key over its rate or with `max_in_flight` requests already under way (see the
    module docstring); `rate` <= 0 or `max_in_flight` <= 0 turns that limit off."""

    def __init__(self, app: ASGIApp, auth: Authenticator, rate: float, burst: int, max_in_flight: int) -> None:
        self.app = app
        self.auth = auth
        self.limiter = RateLimiter(rate, burst) if rate > 0 else None
        self.max_in_flight = max_in_flight
        self._in_flight: dict[str, int] = {}  # caller key -> requests under way; absent = none

    def _refusal(self, caller: str) -> RateLimited | None:
        if self.limiter is not None:
            wait = self.limiter.wait_needed(caller)
            if wait > 0:
                return RateLimited(f"rate limit: at most {self.limiter.rate:g} requests per second per API key "
                                   f"(bursts of {self.limiter.burst}; NMEM_RATE_LIMIT_PER_SECOND); slow down",
                                   retry_after=wait)
        if 0 < self.max_in_flight <= self._in_flight.get(caller, 0):
            return RateLimited(f"too many requests at once: at most {self.max_in_flight} may be under way per API "
                               "key (NMEM_MAX_IN_FLIGHT_PER_KEY); wait for some to finish, or send texts in "
                               "batches", retry_after=IN_FLIGHT_RETRY_AFTER_S)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not app_path(scope).startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        caller = self.auth.caller_of(header_of(scope, b"authorization"))
        refused = self._refusal(caller)
        if refused is not None:
            await problem_response(problem_for(refused, request_id_of(scope)), scope=scope)(scope, receive, send)
            return
        self._in_flight[caller] = self._in_flight.get(caller, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self._in_flight[caller] - 1
            if left:
                self._in_flight[caller] = left
            else:  # bounded: only callers with requests under way are held
                del self._in_flight[caller]
