"""ASGI plumbing around the routes: request ids and security headers, rate limit, body-size
limit, metrics, and the one error envelope.

Order, outermost first: RequestContextMiddleware (a request id on every request and response,
security headers) -> MetricsMiddleware (sees every final status) -> AdmissionMiddleware
(serve/limits.py: rate and requests in flight per key) -> RequestHeadersMiddleware (a header that says who calls or which write
this is, given twice with different values; a compressed body) -> BodyLimitMiddleware (refuses big bodies before
anything parses them) ->
CatchAllMiddleware (no exception leaves a request as anything but `{"error": {...}}`) ->
FastAPI's own exception handlers -> routes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from errors import InvalidInput, NeuralMemoryError, PayloadTooLarge
from serve.auth import Authenticator
from serve.error_map import Problem, problem_for
from serve.metrics import GatewayMetrics
from serve.settings import is_loopback


REQUEST_ID_HEADER = "x-request-id"
# Any id a tracing system makes (UUIDs, `Root=1-...;Parent=...`) is visible ASCII; Serve echoes the
# caller's header whatever it holds, so an id we did not adopt would be answered twice.
_GOOD_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# The dashboard (/ and /ui/) loads only its own scripts, styles and API: nothing inline.
DASHBOARD_CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def request_id_of(scope: Scope) -> str | None:
    """The request id RequestContextMiddleware put in the request's headers."""
    return header_of(scope, REQUEST_ID_HEADER.encode())


def header_of(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case), as text."""
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


MCP_PATH = "/mcp"
API_PREFIX = "/v1"  # every REST route, all behind an API key
# JSON-RPC's range for errors an implementation defines: an HTTP-level refusal of an MCP request.
MCP_REFUSED = -32000


def problem_response(problem: Problem, details: list[dict] | None = None,
                     scope: Scope | None = None) -> JSONResponse:
    """The error envelope; for a request to /mcp, a JSON-RPC error (id null: the request is
    refused before its body is read) carrying the same code and message, which MCP clients
    show to their user, where a REST envelope would reach them as a bare status."""
    if scope is not None and problem.request_id is None:
        problem = dataclasses.replace(problem, request_id=request_id_of(scope))
    body = problem.body()
    if details:
        body["error"]["details"] = details
    if scope is not None and scope.get("path", "").rstrip("/") == MCP_PATH:
        body = {"jsonrpc": "2.0", "id": None,
                "error": {"code": MCP_REFUSED, "message": f"{problem.code}: {problem.message}", "data": body["error"]}}
    return JSONResponse(body, status_code=problem.status, headers=problem.headers() or None)


class RequestContextMiddleware:
    """Every request gets an id (the caller's X-Request-Id, else a new one; a malformed one is
    refused with 400, since Serve would echo it beside ours), set in its
    headers for everything downstream and echoed on the response, with security headers; the
    dashboard's pages also get a Content-Security-Policy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = request_id_of(scope)
        adopted = given is not None and _GOOD_REQUEST_ID.fullmatch(given.encode("latin-1")) is not None
        rid = given.encode("latin-1") if adopted else uuid.uuid4().hex.encode()
        headers = [(k, v) for k, v in scope["headers"] if k != REQUEST_ID_HEADER.encode()]
        path = scope.get("path", "")
        # An id that came with the request (Serve's proxy sets one and echoes it itself) is not
        # echoed twice; one made here is.
        extra = [*SECURITY_HEADERS] + ([] if given is not None else [(REQUEST_ID_HEADER.encode(), rid)])
        if path == "/" or path.startswith("/ui/"):
            extra.append((b"content-security-policy", DASHBOARD_CSP))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                added = [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        scope = {**scope, "headers": [*headers, (REQUEST_ID_HEADER.encode(), rid)]}
        if given is not None and not adopted:  # the body names the id made here, as every error does
            refused = InvalidInput("the X-Request-Id header must be 1-128 visible ASCII characters (no spaces); "
                                   "send a shorter id, or none and the server makes one")
            await problem_response(problem_for(refused), scope=scope)(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


# Headers that decide who the caller is or which write a request is: the app reads only the
# first of a repeated header, so two different values would be decided silently.
ONE_VALUE_HEADERS = (b"authorization", b"idempotency-key", b"host", b"origin")


def key_refusal(auth: Authenticator, scope: Scope) -> Problem | None:
    """Why a request may not go on for want of a valid API key (or, with auth off, for coming
    from another machine); None if it may."""
    client = scope.get("client")
    try:
        auth.check_client(client[0] if client else None)
        auth.tenant_for(header_of(scope, b"authorization"))
    except NeuralMemoryError as exc:
        return problem_for(exc, request_id_of(scope))
    return None


def misdirected(scope: Scope) -> Problem | None:
    """Why a server listening on loopback refuses a request a web page may have made: addressed
    to a host name other than a loopback one (421), or sent from a page of another origin
    (403); None if neither. A page of any site can point its own name at 127.0.0.1 (DNS
    rebinding) and then, being same-origin, read and delete every memory of a server with auth
    off; and any site can post a form to it. The MCP SDK's own check for /mcp is the same rule."""
    host = header_of(scope, b"host") or ""
    name = _host_name(f"//{host}") if _HOST_FORM.fullmatch(host) else None
    if name is None or not is_loopback(name):
        return Problem(421, "misdirected_request", "this server listens on loopback and answers only requests "
                       "addressed to localhost or a loopback address (127.0.0.1, [::1]; a web page could otherwise "
                       "reach it by DNS rebinding): use http://127.0.0.1:<port>/")
    origin = header_of(scope, b"origin")
    if origin is not None and not is_loopback(_host_name(origin) or ""):
        return Problem(403, "forbidden", "this server listens on loopback and refuses requests from pages of other "
                       "sites (Origin header): call it from this machine, not from a web page elsewhere")
    return None


# A Host header as RFC 9110 has it: a name or an [IPv6] literal, and perhaps a port; nothing else
# (no user info, no path).
_HOST_FORM = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?")


def _host_name(url: str) -> str | None:
    """The host of `url` ("//host:port" for a Host header), None if it has none or is malformed."""
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        return None


class RequestHeadersMiddleware:
    """What the headers alone refuse, before any body is read: on a server listening on
    loopback (`local_only`), a request a web page of another site may have made (`misdirected`);
    for /v1, a missing or unknown API key (401; the routes check it again, after their body: a
    keyless client could hold a request slot with a slow body until then); a ONE_VALUE_HEADERS
    header repeated with different values (400); a compressed body (415: the parsers would read
    gzip bytes as broken JSON and say only that)."""

    def __init__(self, app: ASGIApp, auth: Authenticator, local_only: bool) -> None:
        self.app = app
        self.auth = auth
        self.local_only = local_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.local_only:
            refused = misdirected(scope)
            if refused is not None:
                await problem_response(refused, scope=scope)(scope, receive, send)
                return
        if scope["type"] == "http" and app_path(scope).startswith(API_PREFIX):
            refused = key_refusal(self.auth, scope)
            if refused is not None:
                await problem_response(refused, scope=scope)(scope, receive, send)
                return
        if scope["type"] == "http":
            seen: dict[bytes, bytes] = {}
            for name, value in scope.get("headers", []):
                refused: Problem | None = None
                if name in ONE_VALUE_HEADERS and seen.setdefault(name, value) != value:
                    refused = problem_for(InvalidInput(f"the {name.decode().title()} header is given more than "
                                                       "once with different values; send it once"))
                elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                    refused = Problem(415, "unsupported_media_type",
                                      f"request bodies are read uncompressed, not as Content-Encoding "
                                      f"{value.decode('latin-1')!r}: send the body as plain JSON (or the "
                                      "file's own bytes) without a Content-Encoding header")
                if refused is not None:
                    await problem_response(refused, scope=scope)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def app_path(scope: Scope) -> str:
    """The request's path within the app (without the prefix it is mounted under, if any)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class _BodyRefused(Exception):
    """Raised in place of the app's answer once its body was cut short (too large, stalled)."""


@dataclass(frozen=True)
class UploadRoute:
    """A route that takes a file, with its own body limit instead of the JSON body limit."""

    method: str
    path: re.Pattern  # searched, not matched: the app may sit under a prefix
    max_bytes: int
    hint: str  # what to do about a 413, e.g. the setting that raises the limit


# What a body must bring in each `stall_seconds`: one byte at a time, a client held its request
# slot as long as it liked (any real client sends this much in well under a second).
MIN_BODY_BYTES_PER_STALL = 1024


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: by Content-Length up front, else while streaming.
    An `UploadRoute` has its own limit. 408 when the body brings less than
    MIN_BODY_BYTES_PER_STALL in a `stall_seconds` window (a client that stops, or trickles,
    holds a gateway request slot until then)."""

    def __init__(self, app: ASGIApp, max_bytes: int, stall_seconds: float,
                 uploads: tuple[UploadRoute, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads
        self.stall_seconds = stall_seconds

    def _stalled(self) -> Problem:
        return Problem(408, "request_timeout", f"the request body arrived slower than {MIN_BODY_BYTES_PER_STALL:,} "
                       f"bytes in {self.stall_seconds:g} s (or stopped); send it whole, without pauses")

    def _limit(self, scope: Scope) -> tuple[int, str]:
        for route in self.uploads:
            if scope.get("method") == route.method and route.path.search(scope.get("path", "")):
                return route.max_bytes, route.hint
        return self.max_bytes, "send less text (batches of at most a few hundred texts)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, hint = self._limit(scope)
        too_large = problem_for(PayloadTooLarge(f"request body is over the {max_bytes}-byte limit; {hint}"))
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > max_bytes:
                    await problem_response(too_large, scope=scope)(scope, receive, send)
                    return
        seen, body_done = 0, False
        refused: Problem | None = None
        # Raising from `receive` would be caught by the body parser and turned into 400
        # invalid_json; a refusal ends the body instead and replaces whatever answer follows.
        ended = {"type": "http.request", "body": b"", "more_body": False}
        loop = asyncio.get_running_loop()
        window_start, window_bytes = loop.time(), 0  # the body must keep coming, window by window

        def next_window() -> bool:
            """At a window's end: False if it brought too little (a stop, or a trickle that
            would keep the slot as long as a stop), else a new window starts."""
            nonlocal window_start, window_bytes
            if window_bytes < MIN_BODY_BYTES_PER_STALL:
                return False
            window_start, window_bytes = loop.time(), 0
            return True

        async def limited_receive() -> Message:
            nonlocal seen, body_done, refused, window_bytes
            if body_done:  # after the body: a wait for the client to leave, as long as it takes
                return await receive()
            while True:
                try:
                    left = window_start + self.stall_seconds - loop.time()
                    message = await asyncio.wait_for(receive(), max(left, 0.0))
                    break
                except TimeoutError:
                    if not next_window():
                        refused = self._stalled()
                        return ended
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                size = len(message.get("body", b""))
                seen, window_bytes = seen + size, window_bytes + size
                if seen > max_bytes:
                    refused = too_large
                    return ended
                if not body_done and loop.time() - window_start >= self.stall_seconds and not next_window():
                    refused = self._stalled()
                    return ended
            return message

        async def guarded_send(message: Message) -> None:
            if refused is not None:
                raise _BodyRefused
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyRefused:
            pass
        if refused is not None:  # the app's answer (if any) was to a body cut short
            await problem_response(refused, scope=scope)(scope, receive, send)


class CatchAllMiddleware:
    """Any exception a route lets through becomes the envelope (503 for Ray outages, else 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except _BodyRefused:  # BodyLimitMiddleware answers it
            raise
        except Exception as exc:
            if started or scope["type"] != "http":
                raise
            await problem_response(problem_for(exc, request_id_of(scope)), scope=scope)(scope, receive, send)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and final status."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self.metrics.observe_request(
                route_label(scope), scope.get("method", "?"), status, time.perf_counter() - start
            )


def route_label(scope: Scope) -> str:
    """The matched route's template, never the raw path (bounded label cardinality)."""
    route = scope.get("route")
    path = getattr(route, "path", None) or getattr(route, "path_format", None)
    if path:
        return str(path)
    raw = scope.get("path", "")
    for prefix in (MCP_PATH, "/ui/", "/docs", "/openapi.json", "/metrics", "/healthz"):
        if raw == prefix or raw.startswith(prefix):
            return prefix.rstrip("/") or "/"
    return "/" if raw == "/" else "unmatched"


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, parts = parts[0], parts[1:]
        name = ".".join(parts) or "body"
        return name if where == "body" else f"{name} ({where})"
    return ".".join(parts)


def validation_problem(errors: list[dict[str, Any]], content_type: str = "") -> tuple[Problem, list[dict]]:
    """The 4xx for failed request validation; `content_type`: the request's, named when a body
    sent as something other than JSON is why it is not an object."""
    if any(err.get("type") == "json_invalid" for err in errors):
        msg = next(e.get("msg", "") for e in errors if e.get("type") == "json_invalid")
        return Problem(400, "invalid_json", f"request body is not valid JSON ({msg})"), []
    details = [{"field": _field(err.get("loc", ())), "message": err.get("msg", "invalid")}
               for err in errors]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    if content_type and "json" not in content_type.lower() and any(tuple(e.get("loc", ())) == ("body",)
                                                                    for e in errors):
        message += f" (the body was sent as {content_type!r}; send JSON with Content-Type: application/json)"
    # The same code as InvalidInput raised below the gateway: one verdict, one code, whichever
    # layer applied the rule (422 keeps field-level schema failures apart in the status).
    return Problem(422, "invalid_input", message), details


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette's own Allow names only one route's)."""
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.router.routes)]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problem, details = validation_problem(list(exc.errors()), request.headers.get("content-type", ""))
        return problem_response(problem, details, request.scope)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        message = str(exc.detail)
        if exc.status_code == 400 and "pars" in message.lower():  # FastAPI's body parse failure
            return problem_response(Problem(400, "invalid_json", f"request body is not valid JSON "
                                            f"(or nested too deeply): {message}"), scope=request.scope)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
            headers["Allow"] = ", ".join(_allowed_methods(request))
        response = problem_response(Problem(exc.status_code, codes.get(exc.status_code, "http_error"),
                                            message), scope=request.scope)
        response.headers.update(headers)
        return response

    @app.exception_handler(NeuralMemoryError)
    async def on_ours(request: Request, exc: NeuralMemoryError) -> JSONResponse:
        return problem_response(problem_for(exc, request_id_of(request.scope)))
