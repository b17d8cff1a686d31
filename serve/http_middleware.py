"""ASGI plumbing around the routes: body-size limit, metrics, and the one error envelope.

Order, outermost first: MetricsMiddleware (sees every final status) -> BodyLimitMiddleware
(refuses big bodies before anything parses them) -> CatchAllMiddleware (no exception leaves a
request as anything but `{"error": {...}}`) -> FastAPI's own exception handlers -> routes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from errors import NeuralMemoryError
from serve.error_map import Problem, problem_for
from serve.metrics import GatewayMetrics


def problem_response(problem: Problem, details: list[dict] | None = None) -> JSONResponse:
    body = problem.body()
    if details:
        body["error"]["details"] = details
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return JSONResponse(body, status_code=problem.status, headers=headers)


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class UploadRoute:
    """A route that takes a file, with its own body limit instead of the JSON body limit."""

    method: str
    path: re.Pattern  # searched, not matched: the app may sit under a prefix
    max_bytes: int
    hint: str  # what to do about a 413, e.g. the setting that raises the limit


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: by Content-Length up front, else while streaming.
    An `UploadRoute` has its own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, uploads: tuple[UploadRoute, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads

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
        too_large = Problem(413, "payload_too_large",
                            f"request body is over the {max_bytes}-byte limit; {hint}")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > max_bytes:
                    await problem_response(too_large)(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await problem_response(too_large)(scope, receive, send)


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
        except BodyTooLarge:
            raise
        except Exception as exc:
            if started or scope["type"] != "http":
                raise
            await problem_response(problem_for(exc))(scope, receive, send)


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
    for prefix in ("/mcp", "/ui/", "/docs", "/openapi.json", "/metrics", "/healthz"):
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


def validation_problem(errors: list[dict[str, Any]]) -> tuple[Problem, list[dict]]:
    if any(err.get("type") == "json_invalid" for err in errors):
        msg = next(e.get("msg", "") for e in errors if e.get("type") == "json_invalid")
        return Problem(400, "invalid_json", f"request body is not valid JSON ({msg})"), []
    details = [{"field": _field(err.get("loc", ())), "message": err.get("msg", "invalid")}
               for err in errors]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    # The same code as InvalidInput raised below the gateway: one verdict, one code, whichever
    # layer applied the rule (422 keeps field-level schema failures apart in the status).
    return Problem(422, "invalid_input", message), details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problem, details = validation_problem(list(exc.errors()))
        return problem_response(problem, details)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        message = str(exc.detail)
        if exc.status_code == 400 and "pars" in message.lower():  # FastAPI's body parse failure
            return problem_response(Problem(400, "invalid_json", f"request body is not valid JSON "
                                            f"(or nested too deeply): {message}"))
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return problem_response(Problem(exc.status_code, codes.get(exc.status_code, "http_error"),
                                        message))

    @app.exception_handler(NeuralMemoryError)
    async def on_ours(_: Request, exc: NeuralMemoryError) -> JSONResponse:
        return problem_response(problem_for(exc))
