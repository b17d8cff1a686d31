"""The gateway's MCP endpoint: streamable HTTP at /mcp, stateless, JSON responses.

Built inside the FastAPI lifespan (an MCPServer holds locks and task groups that Serve could
not pickle). Every HTTP request to /mcp passes `McpAuthGate` first (401 without a valid key,
like REST); each tool call then maps the same `Authorization` header to its tenant, so a key
reaches only its own tenant's memories.
"""

from __future__ import annotations

import json
import logging

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import INVALID_REQUEST
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.auth import Authenticator
from serve.error_map import Problem
from serve.http_middleware import MCP_PATH, header_of, key_refusal, problem_response
from serve.mcp_tools import ContractMCPServer, register_tools
from serve.metrics import GatewayMetrics
from serve.service import MemoryService, TenantService
from serve.settings import GatewaySettings

INSTRUCTIONS = (
    "Neural memory: named memories that LEARN. `observe` updates a memory's weights from text; "
    "`infer` answers from what it learned; `surprise` says whether something is new. "
    "`checkpoint` / `restore` / `fork` version the learned state. Every tool takes an optional "
    "`memory`; without it the default memory is used (created on first use)."
)


def new_mcp_server() -> MCPServer:
    """An MCPServer that logs only warnings: at INFO the SDK logs a line per stateless request
    (through `rich`), which costs more CPU than the call it describes. The process's root
    logger stays as it was: the SDK gives it a `rich` handler that renders each logged
    traceback (an unexpected error's) for about a second, on the gateway's event loop."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer = ContractMCPServer(
        "neural-memory", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING"
    )
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("mcp").setLevel(logging.WARNING)
    return server


class McpAuthGate:
    """Refuses /mcp requests without a valid API key, before the MCP SDK sees them; then any
    but POST (405). Stateless with JSON answers, the endpoint has no event stream to offer a
    GET (the SDK would hold one open, carrying nothing, in a gateway request slot until the
    client left: ~200 of them stalled every tenant) and no sessions for a DELETE to end."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = key_refusal(self.auth, scope)
            if refused is not None:
                await problem_response(refused, scope=scope)(scope, receive, send)
                return
            if scope["method"] != "POST":
                refused = Problem(405, "method_not_allowed", f"{scope['method']} is not allowed on {MCP_PATH}: "
                                  "send MCP messages with POST (this endpoint is stateless and answers in "
                                  "JSON: no event stream, no sessions)")
                response = problem_response(refused, scope=scope)
                response.headers["Allow"] = "POST"
                await response(scope, receive, send)
                return
            if "application/json" not in (header_of(scope, b"content-type") or "").lower():  # else the SDK's bare text
                refused = Problem(415, "unsupported_media_type", f"send MCP messages to {MCP_PATH} as JSON, "
                                  "with Content-Type: application/json")
                await problem_response(refused, scope=scope)(scope, receive, send)
                return
            body = await _read_body(receive)
            if _has_bad_id(body):
                await _invalid_request(scope, receive, send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (BodyLimitMiddleware, further out, caps it)."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` once, then whatever `receive` gives (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _has_bad_id(body: bytes) -> bool:
    """Whether `body` is a JSON-RPC message whose `id` is neither a string nor an integer. The
    SDK takes such a message for a notification and answers 202 with nothing, so the client
    waits forever for its reply."""
    try:
        message = json.loads(body)
    except ValueError:
        return False  # the SDK answers a parse error itself
    if not isinstance(message, dict) or "id" not in message:
        return False
    request_id = message["id"]
    return isinstance(request_id, bool) or not isinstance(request_id, (str, int))


async def _invalid_request(scope: Scope, receive: Receive, send: Send) -> None:
    error = {"jsonrpc": "2.0", "id": None,
             "error": {"code": INVALID_REQUEST, "message": "Invalid Request: `id` must be a string or an integer "
                       "(a notification has no `id` at all)"}}
    await JSONResponse(error, status_code=400)(scope, receive, send)


def build_mcp(
    core: MemoryService, auth: Authenticator, settings: GatewaySettings, metrics: GatewayMetrics
) -> tuple[MCPServer, ASGIApp]:
    """The MCPServer (run its `session_manager.run()` in the lifespan) and the ASGI app for /mcp."""
    server = new_mcp_server()

    def backend_for(ctx: Context) -> TenantService:
        authorization = (ctx.headers or {}).get("authorization")
        # the key's fingerprint goes into forget jobs' audit records, as over REST
        return core.for_tenant(auth.tenant_for(authorization), auth.key_id(authorization))

    register_tools(server, backend_for, settings.default_memory, metrics)
    # Creates the session manager. The SDK's own Host/Origin check is off: the gateway applies
    # that rule to every route, /mcp included (http_middleware.misdirected).
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=True,
        stateless_http=True,
        host=settings.host,
        max_request_body_size=settings.max_body_bytes,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server, McpAuthGate(StreamableHTTPASGIApp(server.session_manager), auth)
