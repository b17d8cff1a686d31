"""The gateway's FastAPI app: REST /v1, MCP /mcp, /healthz, /readyz, /metrics, the dashboard.

`create_api` is plain FastAPI (no Ray in it), so the Gateway deployment and anything else
that can supply a cluster factory and an encode function can serve it. The cluster and the
MCP server are created in the lifespan, inside the replica, never pickled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route

from serve.auth import Authenticator
from serve.http_middleware import (
    BodyLimitMiddleware,
    MCP_PATH,
    CatchAllMiddleware,
    MetricsMiddleware,
    RequestHeadersMiddleware,
    RequestContextMiddleware,
    install_error_handlers,
)
from serve.images import create_image_router, image_upload
from serve.imports import create_import_router, parse_upload
from serve.limits import AdmissionMiddleware
from serve.mcp_server import build_mcp
from serve.metrics import GatewayMetrics
from serve.rest import ERRORS, create_router
from serve.service import EncodeFn, MemoryService
from serve.settings import GatewaySettings, is_loopback

logger = logging.getLogger(__name__)

DESCRIPTION = """Memory for LLM agents that **learns**: each named memory is a small neural network
whose weights update as it observes. Authenticate with `Authorization: Bearer <key>`.
MCP (streamable HTTP) is at `/mcp`."""


@dataclass
class GatewayRuntime:
    """What the app needs from its host; `make_cluster()` returns an unstarted MemoryCluster."""

    settings: GatewaySettings
    auth: Authenticator
    make_cluster: Callable[[], Any]
    encode: EncodeFn
    metrics: GatewayMetrics


def create_api(rt: GatewayRuntime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cluster = rt.make_cluster()
        await cluster.start()
        try:
            app.state.core = MemoryService(
                cluster, rt.encode, rt.metrics, rt.settings.encoder_cache_seconds
            )
            mcp, mcp_asgi = build_mcp(app.state.core, rt.auth, rt.settings, rt.metrics)
            # every method: the key check comes first, then all but POST get 405 (McpAuthGate)
            app.router.routes.insert(0, Route(MCP_PATH, endpoint=mcp_asgi, methods=None))
            async with mcp.session_manager.run():
                app.state.ready = True
                yield
        finally:
            app.state.ready = False
            await cluster.close()

    app = FastAPI(
        title="Neural Memory Cluster", version="0.1.0", description=DESCRIPTION, lifespan=lifespan
    )
    app.state.auth = rt.auth
    app.state.ready = False
    install_error_handlers(app)
    app.include_router(create_router())
    app.include_router(create_image_router(rt.settings.max_image_bytes))
    app.include_router(create_import_router())
    _add_operational_routes(app, rt)
    _mount_dashboard(app, rt.settings)
    # add_middleware prepends: the last added is the outermost.
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=rt.settings.max_body_bytes,
                       stall_seconds=rt.settings.body_stall_seconds,
                       uploads=(image_upload(rt.settings.max_image_bytes), parse_upload()))
    app.add_middleware(RequestHeadersMiddleware, auth=rt.auth, local_only=is_loopback(rt.settings.host))
    app.add_middleware(AdmissionMiddleware, auth=rt.auth, rate=rt.settings.rate_limit_per_second,
                       burst=rt.settings.rate_limit_burst, max_in_flight=rt.settings.max_in_flight_per_key)
    app.add_middleware(MetricsMiddleware, metrics=rt.metrics)
    app.add_middleware(RequestContextMiddleware)
    return app


HEALTH_TIMEOUT_S = 3.0  # per dependency check
HEALTH_CACHE_S = 2.0  # probes cannot turn into load on Redis, S3, Ray or the encoder


class DependencyReport:
    """Each dependency's state ("ok", "timed out", "unavailable"), checked at most every
    HEALTH_CACHE_S; details of a failure go to the log, never to the caller."""

    def __init__(self, rt: GatewayRuntime) -> None:
        self._rt = rt
        self._at = -HEALTH_CACHE_S
        self._checks: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def checks(self, core) -> dict[str, str]:
        async with self._lock:
            if time.monotonic() - self._at >= HEALTH_CACHE_S:
                self._checks = {**await core.cluster.health(HEALTH_TIMEOUT_S),
                                "encoder": await self._encoder()}
                self._at = time.monotonic()
            return dict(self._checks)

    async def _encoder(self) -> str:
        names = self._rt.settings.encoders_to_preload()
        if not names:
            return "ok"  # nothing preloaded: encoders load on first use
        try:
            await asyncio.wait_for(self._rt.encode(names[0], "health check"), HEALTH_TIMEOUT_S)
        except asyncio.TimeoutError:
            return "timed out"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            logger.warning("health: encoder %s failed: %r", names[0], exc)
            return "unavailable"
        return "ok"


def _add_operational_routes(app: FastAPI, rt: GatewayRuntime) -> None:
    report = DependencyReport(rt)

    async def state(request: Request) -> tuple[str, dict[str, str]]:
        core = getattr(request.app.state, "core", None)
        if core is None or not getattr(request.app.state, "ready", False):
            return "starting", {}
        checks = await report.checks(core)
        return ("ok" if all(v == "ok" for v in checks.values()) else "degraded"), checks

    @app.get("/healthz", tags=["ops"], summary="Liveness, with each dependency's state (no key needed)",
             responses={500: ERRORS[500], 503: {"description": 'Still starting: {"status": "starting"}'}})
    async def healthz(request: Request) -> JSONResponse:
        """200 while this gateway serves, "ok" or "degraded" (a dependency is down: see `checks`);
        a liveness probe should not restart the gateway for a dependency's outage."""
        status, checks = await state(request)
        # default_memory: what an MCP call naming no memory uses (the stdio proxy asks for it)
        return JSONResponse({"status": status, "checks": checks, "default_memory": rt.settings.default_memory},
                            status_code=503 if status == "starting" else 200)

    @app.get("/readyz", tags=["ops"], summary="Readiness: 200 only when every dependency answers",
             responses={500: ERRORS[500],
                        503: {"description": "Starting, or a dependency is down (see `checks`)"}})
    async def readyz(request: Request) -> JSONResponse:
        status, checks = await state(request)
        return JSONResponse({"status": status, "checks": checks}, status_code=200 if status == "ok" else 503,
                            headers=None if status == "ok" else {"Retry-After": "2"})

    async def metrics_guard(request: Request) -> None:
        request.app.state.auth.check_metrics(request.headers.get("authorization"),
                                             request.client.host if request.client else None,
                                             rt.settings.metrics_public)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics (operator key: NMEM_METRICS_KEY)",
             dependencies=[Depends(metrics_guard)], response_class=Response,
             responses={401: ERRORS[401], 403: {"model": ERRORS[401]["model"],
                                                 "description": "A tenant key, or /metrics closed"},
                        500: ERRORS[500]})
    async def metrics(request: Request) -> Response:
        core = getattr(request.app.state, "core", None)
        if core is not None:
            try:
                rt.metrics.live_actors.set(await core.cluster.live_actor_count())
            except Exception:  # a scrape must not fail because one gauge could not be read
                logger.warning("live_actor_count failed", exc_info=True)
        return Response(rt.metrics.render(), media_type=rt.metrics.content_type)


def _mount_dashboard(app: FastAPI, settings: GatewaySettings) -> None:
    ui = settings.resolved_ui_dir()
    index = ui / "index.html"
    if ui.is_dir():
        app.mount("/ui", StaticFiles(directory=str(ui), html=True), name="ui")

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        if index.is_file():
            return FileResponse(str(index), media_type="text/html")
        return JSONResponse({"service": "neural-memory", "docs": "/docs", "mcp": MCP_PATH,
                             "rest": "/v1"})
