"""`neural-memory mcp`: a stdio MCP server for desktop clients, proxying to a running gateway.

Claude Desktop and similar clients start MCP servers as subprocesses and talk over stdin /
stdout. This one exposes the same 15 tools as the gateway's /mcp (they are the same
functions) and forwards each call to the gateway's REST API with the given API key, so the
tenant, validation and errors are exactly those of the gateway: the backend is the Python
client (`neural_memory.AsyncClient`), whose errors are the gateway's exception classes.
Stdout carries only the protocol; diagnostics go to stderr.
"""

from __future__ import annotations

import sys

import httpx
from mcp.server.mcpserver import MCPServer

from errors import AuthError
from neural_memory import AsyncClient
from serve.mcp_server import new_mcp_server
from serve.mcp_tools import register_tools
from serve.settings import GatewaySettings


# The gateway's own default, if it cannot be asked which it uses.
FALLBACK_DEFAULT_MEMORY: str = GatewaySettings.model_fields["default_memory"].default


def build_proxy(url: str, api_key: str | None, default_memory: str = FALLBACK_DEFAULT_MEMORY
                ) -> tuple[MCPServer, AsyncClient]:
    backend = AsyncClient(url, api_key)
    server = new_mcp_server()
    register_tools(server, lambda ctx: backend, default_memory, local_errors=True)
    return server, backend


async def gateway_default_memory(url: str) -> str:
    """The memory the gateway's own /mcp uses for a call that names none (its
    NMEM_DEFAULT_MEMORY, told by /healthz), so an agent on the stdio proxy and one on HTTP
    share it; FALLBACK_DEFAULT_MEMORY if the gateway cannot say (down, or an older version)."""
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            told = (await http.get(f"{url.rstrip('/')}/healthz")).json().get("default_memory")
    except (httpx.HTTPError, ValueError, AttributeError):
        return FALLBACK_DEFAULT_MEMORY
    return told if isinstance(told, str) and told else FALLBACK_DEFAULT_MEMORY


async def run_proxy(url: str, api_key: str | None, default_memory: str | None = None) -> None:
    """`default_memory` None: the gateway's (`gateway_default_memory`)."""
    server, backend = build_proxy(url, api_key, default_memory or await gateway_default_memory(url))
    try:
        await _check_gateway(backend)
        await server.run_stdio_async()
    finally:
        await backend.aclose()


async def _check_gateway(backend: AsyncClient) -> None:
    """Say on stderr (never stdout) if the gateway is unreachable; tools will report it too.
    AuthError if it refuses the key: that will not change while the proxy runs."""
    try:
        await backend.list_memories()
    except AuthError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hint only; the proxy still starts (the gateway may come up)
        print(f"neural-memory mcp: gateway at {backend.url} not usable yet: {exc}",
              file=sys.stderr)
